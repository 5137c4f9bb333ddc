"""Fixtures shared by the gallery and people tests: an 8-d model fingerprint (and another one) and an empty
gallery bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from marginface.infer.faces import ModelFingerprint
from marginface.infer.gallery import Gallery
from marginface.infer.thresholds import Threshold

FP = ModelFingerprint("ab" * 32, 112, "NCHW", "RGB", 127.5, 127.5, 8)
OTHER = ModelFingerprint("cd" * 32, 112, "NCHW", "RGB", 127.5, 127.5, 8)


@pytest.fixture()
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    """An empty exact-index gallery tmp_path/g.db bound to FP at threshold 0.5."""
    g = Gallery.create(tmp_path / "g.db", FP, Threshold.fixed(0.5), model=tmp_path / "m.onnx", detector=None)
    yield g
    g.close()
