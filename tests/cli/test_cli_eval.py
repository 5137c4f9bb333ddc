"""marginface eval through the command line: an exported model on synthetic pairs, the pretrained ONNX model on
LFW pairs with detection (report, ROC), and a clear error when there is nothing to evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from marginface.backbones import get_backbone, save
from marginface.cli import main


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported MobileFaceNet small enough that embedding 240 faces costs a fraction of a second: these tests
    check the command (sets, options, report), not the network (tests/backbones, tests/infer/test_export.py)."""
    kwargs = {"scale": 1, "blocks": [1, 1, 1, 1], "input_pool": 4}
    torch.manual_seed(0)
    return save(get_backbone("mbf", num_features=16, **kwargs).eval(), "mbf", tmp_path_factory.mktemp("m"), **kwargs)


def test_cli_eval_exported_model_on_synthetic(tmp_path: Path, small_model: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(small_model), "--synthetic", "--folds", "0,1", "--no-flip",
                 "--out", str(tmp_path / "report")]) == 0
    assert "synthetic" in capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verification"][0]["num_pairs"] == 120
    assert report["options"]["no_flip"] is True


def test_cli_eval_needs_a_set(small_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(small_model)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_eval_writes_report(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lfw = shared_data / "lfw"
    pairs = tmp_path / "pairs.txt"
    lines = (lfw / "pairs.txt").read_text().splitlines()
    pairs.write_text("\n".join(["2 20", *lines[1:21], *lines[301:321], *lines[601:621], *lines[901:921]]) + "\n")
    code = main(["eval", str(shared_data / "face_recognition_mobilefacenet" / "weights" / "MobileFaceNet.onnx"),
                 "--pairs", str(pairs), str(lfw / "lfw-deepfunneled"),
                 "--detector", str(shared_data / "face_detection_yunet" / "onnx" / "yunet_s_dynamic.onnx"),
                 "--out", str(tmp_path / "report")])
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    result = report["verification"][0]
    folds = [fold["accuracy"] for fold in result["folds"]]
    assert folds == [1.0, 1.0]  # the real MobileFaceNet on these 80 LFW pairs (deterministic: no seed involved)
    row = f"{result['name']:<14}{80:>7}{100 * result['accuracy_mean']:>11.2f} ± {100 * result['accuracy_std']:4.2f}"
    assert row in out.splitlines()[1], out  # the console's figures are the report's
    assert f"{result['name']} folds: {' '.join(f'{100 * a:.2f}' for a in folds)}" in out
    assert result["accuracy_mean"] == pytest.approx(sum(folds) / len(folds), abs=1e-12)
    assert report["verification"][0]["num_pairs"] == 80
    assert len(report["verification"][0]["folds"]) == 2
    assert (tmp_path / "report" / f"roc_{report['verification'][0]['name']}.png").stat().st_size > 1000
