"""Checkpoints: atomic, checksummed; corrupt ones are skipped; a crash mid-save destroys nothing."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from marginface.fileio import current_umask, sha256_file
from marginface.train.checkpoint import (
    latest_valid,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)


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


def test_disk_full_mid_save_removes_its_tmp_and_keeps_previous(tmp_path: Path, monkeypatch) -> None:
    _save(tmp_path, 10)

    def crash(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("marginface.train.checkpoint.torch.save", crash)
    with pytest.raises(OSError):
        _save(tmp_path, 20)
    assert latest_valid(tmp_path).step == 10
    assert not (tmp_path / "checkpoints" / "step-00000020.tmp").exists()  # the partial copy frees its space
    assert [c.step for c in list_checkpoints(tmp_path)] == [10]


def test_debris_of_a_killed_save_is_removed_by_the_next(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "step-00000005.tmp").mkdir(parents=True)  # what kill -9 mid-save leaves
    _save(tmp_path, 10)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000010"]


def test_every_output_file_has_the_umask_mode(tmp_path: Path) -> None:
    path = _save(tmp_path, 10)
    expected = 0o666 & ~current_umask()
    assert {name: stat.S_IMODE((path / name).stat().st_mode) for name in ("weights.safetensors", "state.pt",
                                                                         "meta.json")} == dict.fromkeys(
        ("weights.safetensors", "state.pt", "meta.json"), expected)


class _Hostile:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def _rewrite_state(checkpoint: Path, state: object) -> None:
    """Replace state.pt and fix its checksum in meta.json, as an attacker with write access would."""
    torch.save(state, checkpoint / "state.pt")
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["files"]["state.pt"] = sha256_file(checkpoint / "state.pt")
    (checkpoint / "meta.json").write_text(json.dumps(meta))


def test_hostile_pickle_with_valid_checksum_is_skipped_like_a_corrupt_one(tmp_path: Path, caplog) -> None:
    _save(tmp_path, 10)
    newest = _save(tmp_path, 20)
    _rewrite_state(newest, {"step": 20, "payload": _Hostile()})
    with pytest.raises(ValueError, match="state.pt holds objects the safe loader refuses") as err:
        load_checkpoint(newest)
    assert "weights_only=False" not in str(err.value)
    path, (_, state, _) = load_latest(tmp_path)
    assert path.name == "step-00000010" and state["step"] == 10
    assert "step-00000020" in caplog.text


def test_load_latest_refuses_when_every_checkpoint_is_unusable(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None  # no checkpoint at all: a fresh start is fine
    older, newest = _save(tmp_path, 10), _save(tmp_path, 20)
    _rewrite_state(newest, _Hostile())
    (older / "meta.json").unlink()
    with pytest.raises(ValueError) as err:
        load_latest(tmp_path)
    message = str(err.value)
    assert "no usable checkpoint" in message and "--resume none" in message
    assert "step-00000020: state.pt holds objects the safe loader refuses" in message
    assert "step-00000010: no readable meta.json" in message
