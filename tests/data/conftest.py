"""Fixtures for data tests: small real file systems (a tmpfs that fills up, a read-only mount) when the
tests run as root, so full and read-only disks are real rather than simulated."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from .helpers import tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """mount(size_bytes) -> a fresh tmpfs of that size under tmp_path (skips when mounting is not allowed)."""
    with ExitStack() as stack:

        def mount(size: int) -> Path:
            target = stack.enter_context(tmpfs(tmp_path / "disk", size))
            if target is None:
                pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
            return target

        yield mount


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nothing can be written to: a read-only tmpfs as root, else a chmod 0555 folder."""
    with tmpfs(tmp_path / "ro", 64 * 1024, read_only=True, prepare=("existing",)) as target:
        if target is not None:
            yield target
            return
    if os.geteuid() == 0:
        pytest.skip("root without mount rights: permission bits do not stop root")
    target = tmp_path / "ro"
    (target / "existing").mkdir(parents=True)
    for folder in (target / "existing", target):
        folder.chmod(0o555)
    yield target
    for folder in (target, target / "existing"):
        folder.chmod(0o755)
