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


def test_cli_export_refuses_a_folder_as_output_a_missing_run_and_a_nan_tolerance(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(tiny_config(tmp_path / "run", "optim.max_steps=1")).train()
    (tmp_path / "out").mkdir()
    assert main(["export", "onnx", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.glob("*.tmp")) == [] and list((tmp_path / "out").iterdir()) == []
    assert main(["export", "onnx", str(tmp_path / "no_run")]) == 2
    assert f"{tmp_path / 'no_run'} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "onnx", str(tmp_path / "run"), "--tolerance", "nan"])
    assert "expected a finite number >= 0" in capsys.readouterr().err


def test_a_file_where_a_folder_is_needed_is_named_as_such(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(tiny_config(tmp_path / "run", "optim.max_steps=1")).train()
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert main(["export", "onnx", str(tmp_path / "run"), "--out", str(tmp_path / "photo.jpg" / "m.onnx")]) == 2
    assert f"{tmp_path / 'photo.jpg'} exists and is not a folder" in capsys.readouterr().err
