"""Checkpoints: atomic, checksummed; corrupt ones are skipped; a crash mid-save destroys nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from marginface.train.checkpoint import latest_valid, list_checkpoints, load_checkpoint, save_checkpoint


def _save(run: Path, step: int, keep: int = 5) -> Path:
    return save_checkpoint(run, step, {"w": torch.full((3,), float(step))}, {"step": step}, keep=keep)


def test_round_trip_and_pruning(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _save(tmp_path, step, keep=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [30, 20]
    weights, state, meta = load_checkpoint(tmp_path / "checkpoints" / "step-00000030")
    assert weights["w"].tolist() == [30.0] * 3 and state["step"] == 30 and meta["step"] == 30


def test_corrupt_newest_is_skipped(tmp_path: Path, caplog) -> None:
    _save(tmp_path, 10)
    newest = _save(tmp_path, 20)
    data = bytearray((newest / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (newest / "weights.safetensors").write_bytes(bytes(data))
    assert latest_valid(tmp_path).step == 10
    assert "does not match its checksum" in caplog.text
    with pytest.raises(ValueError, match="not usable"):
        load_checkpoint(newest)


def test_crash_mid_save_leaves_previous_intact(tmp_path: Path, monkeypatch) -> None:
    _save(tmp_path, 10)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("marginface.train.checkpoint.torch.save", crash)
    with pytest.raises(OSError):
        _save(tmp_path, 20)
    assert latest_valid(tmp_path).step == 10
    assert (tmp_path / "checkpoints" / "step-00000020.tmp").exists()  # debris, never mistaken for a checkpoint
    assert [c.step for c in list_checkpoints(tmp_path)] == [10]
