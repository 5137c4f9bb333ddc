"""Shared fixtures: where the real data lies (../shared/data unless MARGINFACE_DATA says otherwise), a small model."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The folder with LFW, ORL, YuNet and MobileFaceNet (read in place, never copied)."""
    return Path(os.environ.get("MARGINFACE_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set MARGINFACE_DATA to point at shared/data)")
    return path


@pytest.fixture(scope="module")
def trained_like_mbf() -> torch.nn.Module:
    """A full-size MobileFaceNet (128-d) in eval mode with non-trivial BatchNorm statistics."""
    from marginface.backbones import get_backbone

    torch.manual_seed(0)
    model = get_backbone("mbf", num_features=128)
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 3, 112, 112) * 2 - 1)
    return model.eval()


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `folder`, for full-disk and read-only-mount tests (skips the test where
    this process may not mount); `remount_read_only(folder)` turns it read-only."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); this probe needs a real file system")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount_read_only(folder: Path) -> None:
    """Make the tmpfs at `folder` read-only (every file on it must be closed for writing first)."""
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
