"""Writing outputs safely: check the target is writable before any work, write every file under a temporary
name in the target directory, rename them into place only when all are complete, remove them on failure.

So a full disk or an exception half-way never leaves a truncated file under a final name, and packing over
an existing pack keeps the old one readable until the new one is whole.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from types import TracebackType

from marginface.fileio import OutputError, ensure_writable_dir

__all__ = ["OutputError", "StagedOutputs", "ensure_writable"]

log = logging.getLogger(__name__)


def ensure_writable(directory: str | Path) -> Path:
    """Create `directory` if needed and prove a file can be created in it; raises OutputError otherwise."""
    return ensure_writable_dir(directory)


class StagedOutputs:
    """Context manager handing out temporary paths beside their final names; on a clean exit each is flushed
    to disk and renamed to its final name (in the order asked for), on an exception every temporary is removed
    and an OSError is re-raised as OutputError naming the file being written."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = ensure_writable(directory)
        self._token = secrets.token_hex(4)
        self._staged: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []
        self._made_dirs: list[Path] = []

    def _temporary(self, relative: str | Path) -> tuple[Path, Path]:
        final = self.directory / relative
        if not final.resolve().is_relative_to(self.directory.resolve()):
            raise OutputError(f"output {relative} would be written outside {self.directory}")
        missing = [p for p in [final.parent, *final.parent.parents] if not p.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        self._made_dirs.extend(reversed(missing))
        return final.parent / f".{final.name}.{self._token}.tmp", final

    def path(self, relative: str | Path) -> Path:
        """A temporary path beside `relative` (inside the target directory) that becomes it on commit."""
        temporary, final = self._temporary(relative)
        self._staged.append((temporary, final))
        return temporary

    def scratch(self, name: str) -> Path:
        """A temporary path in the target directory that is removed at the end whatever happens."""
        temporary, _ = self._temporary(name)
        self._scratch.append(temporary)
        return temporary

    def discard(self) -> None:
        """Remove every temporary and every directory made for them (final names are never touched)."""
        for temporary in [t for t, _ in self._staged] + self._scratch:
            try:
                temporary.unlink(missing_ok=True)
            except OSError as err:  # pragma: no cover - nothing more can be done
                log.warning("cannot remove temporary file %s: %s", temporary, err)
        for folder in reversed(self._made_dirs):
            try:
                folder.rmdir()
            except OSError:  # not empty (something else lives there) or already gone
                pass

    def commit(self) -> list[Path]:
        """fsync every temporary, then rename each to its final name; returns the final paths."""
        for temporary in self._scratch:
            temporary.unlink(missing_ok=True)
        for temporary, _ in self._staged:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        for temporary, final in self._staged:
            os.replace(temporary, final)
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return [final for _, final in self._staged]
        try:
            os.fsync(dir_fd)
        except OSError:  # pragma: no cover - some file systems refuse fsync on directories
            pass
        finally:
            os.close(dir_fd)
        return [final for _, final in self._staged]

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            try:
                self.commit()
            except OSError as err:
                self.discard()
                raise OutputError(f"cannot write outputs in {self.directory}: {err.strerror or err}") from err
            return
        self.discard()
        if isinstance(exc, OSError) and self._is_ours(exc.filename):  # a read error elsewhere stays what it is
            where = exc.filename or self.directory
            raise OutputError(f"cannot write {where}: {exc.strerror or exc}; nothing was replaced "
                              f"in {self.directory}") from exc

    def _is_ours(self, filename: object) -> bool:
        """Whether an OSError's file is one of ours (None: a failed write on an open handle, e.g. ENOSPC)."""
        if filename is None:
            return True
        try:
            return Path(os.fsdecode(filename)).resolve().is_relative_to(self.directory.resolve())
        except (TypeError, ValueError, OSError):
            return False
