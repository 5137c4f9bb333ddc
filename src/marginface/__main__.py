"""Entry point for `python -m marginface` (also what torchrun launches)."""

from marginface.cli import main

raise SystemExit(main())
