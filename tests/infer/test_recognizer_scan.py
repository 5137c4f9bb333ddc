"""FaceRecognizer.scan with several workers on synthetic aligned faces (a tiny ONNX model, no detector): the
same results in the same order as the serial path, per-file errors, a failing worker, early close."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from marginface.errors import UsageError
from marginface.infer.export import export_onnx
from marginface.infer.recognizer import FaceRecognizer, scan_workers
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight embedding model (112x112 RGB -> 16-d) as a dynamic-batch ONNX file."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, 16))
    return export_onnx(model, tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture()
def photos(tmp_path: Path) -> list[Path]:
    """23 aligned 112x112 'faces' (random PNGs) in a folder, sorted as scan lists them."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(23):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    return sorted(folder.iterdir())


def recognizer(model: Path, batch_size: int = 4) -> FaceRecognizer:
    return FaceRecognizer(model, None, batch_size=batch_size)


def assert_same_scan(serial: list, parallel: list) -> None:
    """Same files in the same order, same errors, embeddings equal to float tolerance."""
    assert [path for path, _ in parallel] == [path for path, _ in serial]
    for (path, a), (_, b) in zip(serial, parallel, strict=True):
        if isinstance(a, Exception):
            assert type(b) is type(a) and str(b) == str(a), path
            continue
        assert len(a) == len(b), path
        for fa, fb in zip(a, b, strict=True):
            assert fa.box == fb.box and fa.detection_score == fb.detection_score
            np.testing.assert_allclose(fb.embedding, fa.embedding, rtol=0, atol=1e-6)
            assert fb.raw_norm == pytest.approx(fa.raw_norm, rel=1e-6)


def scan_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("marginface-scan")]


def test_default_workers_follow_the_affinity_mask_and_bad_counts_are_refused() -> None:
    assert scan_workers() == len(os.sched_getaffinity(0))
    assert scan_workers(3) == 3
    for bad in (0, -1, True, 2.0):
        with pytest.raises(UsageError, match="workers must be an integer >= 1"):
            scan_workers(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_parallel_scan_equals_serial(tiny_model: Path, photos: list[Path], workers: int) -> None:
    rec = recognizer(tiny_model)
    serial = list(rec.scan(photos, workers=1))
    calls: list[tuple[int, int]] = []
    parallel = list(rec.scan([photos[0].parent], lambda done, total: calls.append((done, total)), workers=workers))
    assert [p for p, _ in serial] == photos
    assert all(len(found) == 1 for _, found in serial)
    assert_same_scan(serial, parallel)
    assert calls == [(i, len(photos)) for i in range(1, len(photos) + 1)]  # progress unchanged: one call per image
    assert not scan_threads()


def test_a_corrupt_file_in_the_middle_is_reported_for_that_file(tiny_model: Path, photos: list[Path]) -> None:
    photos[11].write_bytes(b"not an image at all")
    (photos[0].parent / "012_wrong_size.png").write_bytes(cv2.imencode(".png", np.zeros((60, 80, 3), np.uint8))[1])
    files = sorted(photos[0].parent.iterdir())
    rec = recognizer(tiny_model)
    serial = list(rec.scan(files, workers=1))
    parallel = list(rec.scan(files, workers=3))
    assert_same_scan(serial, parallel)
    errors = {path.name: str(found) for path, found in parallel if isinstance(found, Exception)}
    assert set(errors) == {"011.png", "012_wrong_size.png"}
    assert "011.png: not an image" in errors["011.png"] and "got 80x60" in errors["012_wrong_size.png"]
    assert sum(isinstance(found, list) and len(found) == 1 for _, found in parallel) == len(files) - 2


def test_closing_the_generator_early_stops_the_workers(tiny_model: Path, photos: list[Path]) -> None:
    rec = recognizer(tiny_model, batch_size=2)
    scan = rec.scan(photos, workers=3)
    first = next(scan)
    assert first[0] == photos[0] and scan_threads()  # the workers are running ahead
    scan.close()
    assert not scan_threads()  # joined, not left running
    for _item in rec.scan(photos[:5], workers=2):  # breaking out of a loop drops (so closes) it too
        break
    assert not scan_threads()


_FAILING_WORKER = """
import sys
import marginface.infer.recognizer as recognizer_module
from marginface.infer.recognizer import FaceRecognizer, image_files

files = image_files([sys.argv[2]])
real = recognizer_module.load_image
def load_image(path, **kwargs):
    if path == files[9]:
        raise RuntimeError("boom in a worker")
    return real(path, **kwargs)
recognizer_module.load_image = load_image
rec = FaceRecognizer(sys.argv[1], None, batch_size=2)
got = []
try:
    for path, found in rec.scan(files, workers=3):
        got.append(path)
except RuntimeError as err:
    print(f"raised {err} after {len(got)}")
"""


def test_an_unexpected_error_in_a_worker_is_raised_not_hung(tiny_model: Path, photos: list[Path]) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", _FAILING_WORKER, str(tiny_model), str(photos[0].parent)],
                          env=env, capture_output=True, text=True, timeout=120)  # a hang fails here
    assert done.returncode == 0, done.stderr
    assert "raised boom in a worker after 8" in done.stdout  # every image before the failing batch came back
