"""marginface export onnx on a training run: the ONNX file is written and its difference to PyTorch printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.cli import main
from marginface.train.trainer import Trainer

from ..train.helpers import tiny_config


def test_cli_export_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(tiny_config(tmp_path / "run", "optim.max_steps=2")).train()
    assert main(["export", "onnx", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max |ONNX - PyTorch|" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
