"""File helpers shared across the package (no dependencies on the rest of marginface but its errors)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from marginface.errors import InputError


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_safetensors(tensors: dict, path: str | Path) -> None:
    """safetensors' save_file with the umask's mode (it creates files 0600) and OSError for I/O failures
    (it raises its own SafetensorError, even for a full disk)."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path))
    except OSError:
        raise
    except Exception as err:  # SafetensorError: "Error while serializing: I/O error: No space left on device"
        raise OSError(f"cannot write {path}: {err}") from err
    set_default_mode(path)


def set_default_mode(path: str | Path) -> None:
    """Give a file written by a library that creates it 0600 (safetensors) the mode open() would have given
    it (0666 minus the umask, 0644 usually), so every output of a run has the same permissions."""
    os.chmod(path, 0o666 & ~current_umask())


class OutputError(InputError):
    """An output location cannot be written (read-only, not a directory, disk full); names the path."""


def ensure_writable_dir(path: str | Path, what: str = "output directory") -> Path:
    """Create `path` if needed and prove a file can be created in it, before any work is done; OutputError
    naming `what` and the directory otherwise. The one writable-folder probe (training, eval, data outputs)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise OutputError(f"{what} {path} exists and is not a directory") from err
    except OSError as err:
        raise OutputError(f"cannot create {what} {path}: {err.strerror or err}; {path} is not writable") from err
    if not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a directory")
    try:  # os.access says yes to root on a read-only mount: try the real thing
        fd, probe = tempfile.mkstemp(prefix=".marginface-write-test-", dir=path)
    except OSError as err:
        raise OutputError(f"{what} {path} is not writable: {err.strerror or err}") from err
    os.close(fd)
    os.unlink(probe)
    return path
