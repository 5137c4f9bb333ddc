"""MarginfaceError, the one root of the errors a user can act on, and the one place foreign errors are read.

Every error a user can act on (a bad option, file, record or value; a gallery that cannot be written now; a run
that cannot go on) is a MarginfaceError carrying the CLI's exit status and the service's HTTP status; its
message is one line naming the file, record or value. The CLI (marginface.cli) and the service
(marginface.serve.app) each map it in one place. Anything else that reaches them is a bug: the CLI prints its
traceback and exits with EXIT_BUG, the service answers 500.

Errors raised by other libraries (torch, gloo, SQLite) are recognised by `user_error`, by exception type, and
nowhere else.
"""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 2  # a user error: one `marginface: error: ...` line
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h): an internal error, its traceback printed


class MarginfaceError(Exception):
    """An error a user can act on; `exit_status` for the CLI, `http_status` for the service."""

    exit_status: int = EXIT_USER_ERROR
    http_status: int = 400


class UsageError(MarginfaceError, ValueError):
    """An option, argument or configuration value that cannot be used (alone or with the others given)."""

    http_status = 422


class InputError(MarginfaceError, ValueError):
    """A file, folder or record the user gave whose content is not what is needed; the message names it."""


class Unavailable(MarginfaceError, RuntimeError):
    """Something the work needs is not there or gave out: a device, an optional extra, another process of a run."""

    http_status = 503


class RunFailed(MarginfaceError, RuntimeError):
    """A training run that cannot go on (diverged, lost a peer, unequal distributed batches)."""

    http_status = 500


LOST_PEER = "lost contact with another process of this run: it stopped (its own error is printed) or was killed"

def _is_lost_peer(err: BaseException) -> bool:
    """True for a collective whose peer went away: torch's DistError types, or gloo's I/O error (which reaches
    Python as a plain RuntimeError, its one recognisable part being the socket's words)."""
    distributed = sys.modules.get("torch.distributed")
    dist_error = getattr(distributed, "DistError", None) if distributed is not None else None
    text = str(err)
    peer_words = "closed by peer" in text or "reset by peer" in text
    if dist_error is not None and isinstance(err, dist_error):
        return True
    return isinstance(err, RuntimeError) and peer_words


def user_error(err: BaseException) -> MarginfaceError | OSError | None:
    """`err` as the user's error (a MarginfaceError, or an OSError naming its file) or None when it is a bug.

    MarginfaceError and OSError are users' errors as they are; a lost distributed peer becomes RunFailed
    (LOST_PEER). Everything else is None.
    """
    if isinstance(err, (MarginfaceError, OSError)):
        return err
    if _is_lost_peer(err):
        lost = RunFailed(LOST_PEER if "by peer" in str(err) else str(err))
        lost.__cause__ = err
        return lost
    return None

