"""The `marginface` command: one entry point; one module per command family (data, train, eval, export,
recognition, people, serve), each registering its subcommands as thin shells over the library. Only this package prints.

Errors meet the user here, in `main`, once: a user's error (marginface.errors.user_error: a MarginfaceError or an
OSError) is one `marginface: error: ...` line and its exit status (2; `-v` adds the traceback); anything else is
a bug: its traceback is always printed and the exit status is EXIT_BUG (70).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from marginface import __version__
from marginface.cli import data, export, people, recognition, serve, train
from marginface.cli import eval as eval_
from marginface.errors import EXIT_BUG, EXIT_USER_ERROR, MarginfaceError, user_error

# The library is imported inside each handler: marginface.data, .train, .infer and .backbones load torch and
# OpenCV (about 6 s), which `marginface --help`, `--version` and argument errors should not wait for.

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="marginface",
        description="Train, evaluate and deploy face recognizers with margin-based softmax losses.",
    )
    parser.add_argument("--version", action="version", version=f"marginface {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for family in (data, eval_, train, export, recognition, people, serve):
        family.register(commands)
    return parser


def _error_line(err: BaseException) -> str:
    """A user's error (errors.user_error) as one line: OSError keeps its file name (a file where a folder is
    needed says so), an error re-raised from a DataLoader worker shows the worker's message (not its
    traceback), and under torchrun the line starts with this process's rank."""
    text = str(err)
    if isinstance(err, FileExistsError) and err.filename is not None and not Path(err.filename).is_dir():
        text = f"{err.filename} exists and is not a folder (a folder is needed there)"
    elif isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    if "Original Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(text.split()) or type(err).__name__
    world_size = os.environ.get("WORLD_SIZE", "1")
    return f"rank {os.environ.get('RANK', '?')} of {world_size}: {text}" if world_size not in ("", "1") else text


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # OpenCV's own warnings are not the user's business
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except Exception as err:  # noqa: BLE001 - the one place errors meet the user: theirs, or a bug
        _close_progress_bars()
        known = user_error(err)
        if known is None:
            traceback.print_exc(file=sys.stderr)
            print(f"marginface: internal error (a bug; please report it with the traceback above): "
                  f"{type(err).__name__}: {_error_line(err)}", file=sys.stderr)
            return EXIT_BUG
        if args.verbose:
            logging.getLogger("marginface").error("the traceback behind the error below", exc_info=err)
        print(f"marginface: error: {_error_line(known)}", file=sys.stderr)
        return known.exit_status if isinstance(known, MarginfaceError) else EXIT_USER_ERROR
    finally:
        _leave_process_group()


def _close_progress_bars() -> None:
    """End any progress bar a failed subcommand left open, so that the error starts its own line."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", None) or []):
        bar.close()


def _leave_process_group() -> None:
    """Leave torch.distributed if this process joined it (a no-op outside torchrun)."""
    torch_distributed = sys.modules.get("torch.distributed")
    if torch_distributed is not None and torch_distributed.is_available() and torch_distributed.is_initialized():
        torch_distributed.destroy_process_group()



if __name__ == "__main__":
    raise SystemExit(main())
