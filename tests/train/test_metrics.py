"""The metrics writer: CSV rows as before, TensorBoard released by close, also when a run fails."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from marginface.train.metrics import MetricsWriter


def test_rows_and_close(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as metrics:
        metrics.write("train", 1, {"loss": 2.5, "lr": 0.1}, epoch=0)
        metrics.write("eval", 1, {"lfw": 0.9})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["kind"], r["step"], r["epoch"], r["name"], r["value"]) for r in rows] == [
        ("train", "1", "0", "loss", "2.5"), ("train", "1", "0", "lr", "0.1"), ("eval", "1", "", "lfw", "0.9")]
    assert metrics._tensorboard is None  # closed on leaving the block


def test_closed_when_the_block_raises(tmp_path: Path) -> None:
    metrics = MetricsWriter(tmp_path)
    with pytest.raises(RuntimeError), metrics:
        metrics.write("train", 1, {"loss": 1.0})
        raise RuntimeError("diverged")
    assert metrics._tensorboard is None


def test_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    MetricsWriter(tmp_path, enabled=False).write("train", 1, {"loss": 1.0})
    assert not list(tmp_path.iterdir())
