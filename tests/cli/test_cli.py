"""The console entry point answers --help and --version."""

from __future__ import annotations

import subprocess
import sys

import pytest

from marginface import __version__
from marginface.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_via_module() -> None:
    out = subprocess.run([sys.executable, "-m", "marginface", "--help"], capture_output=True, text=True, check=True)
    assert "margin-based softmax" in out.stdout
