"""marginface eval on an exported model through the command line: synthetic pairs; nothing to evaluate is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from marginface.backbones import save
from marginface.cli import main


def test_cli_eval_exported_model_on_synthetic(tmp_path: Path, trained_like_mbf: torch.nn.Module,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    save(trained_like_mbf, "mbf", tmp_path / "model")
    assert main(["eval", str(tmp_path / "model"), "--synthetic", "--folds", "0,1", "--no-flip",
                 "--out", str(tmp_path / "report")]) == 0
    assert "synthetic" in capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verification"][0]["num_pairs"] == 120
    assert report["options"]["no_flip"] is True


def test_cli_eval_needs_a_set(tmp_path: Path, trained_like_mbf: torch.nn.Module,
                              capsys: pytest.CaptureFixture[str]) -> None:
    save(trained_like_mbf, "mbf", tmp_path / "model")
    assert main(["eval", str(tmp_path / "model")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
