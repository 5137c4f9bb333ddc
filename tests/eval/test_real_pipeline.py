"""The real path on real data: YuNet alignment + pretrained MobileFaceNet ONNX on LFW (two folds), ORL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marginface.cli import main
from marginface.data import read_pairs_txt
from marginface.eval.pipeline import evaluate_identity_folder, evaluate_pair_set
from marginface.infer.detect import YuNetDetector
from marginface.infer.embedder import OnnxEmbedder
from marginface.infer.prepare import FacePreprocessor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(shared_data: Path) -> OnnxEmbedder:
    return OnnxEmbedder(shared_data / "face_recognition_mobilefacenet" / "mobilefacenet_dynamic_batch.onnx")


@pytest.fixture(scope="module")
def detector(shared_data: Path) -> YuNetDetector:
    return YuNetDetector(shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx")


def test_lfw_two_folds(shared_data: Path, model: OnnxEmbedder, detector: YuNetDetector) -> None:
    lfw = shared_data / "lfw"
    pairs = read_pairs_txt(lfw / "pairs.txt", lfw / "lfw-deepfunneled").subset([0, 1])
    result = evaluate_pair_set(pairs, model, FacePreprocessor(detector))
    assert result.fallbacks == 0 and result.aligned == len(pairs.images)
    assert result.verification.accuracy_mean >= 0.98
    assert result.verification.auc > 0.99
    grid = evaluate_pair_set(pairs, model, FacePreprocessor(detector), search="grid")
    assert abs(grid.verification.accuracy_mean - result.verification.accuracy_mean) < 0.01


def test_orl_identification(shared_data: Path, model: OnnxEmbedder, detector: YuNetDetector) -> None:
    result = evaluate_identity_folder(shared_data / "orl_att_faces" / "att_faces", model, FacePreprocessor(detector),
                                      min_images=10)
    assert result.num_gallery == 28 and result.num_unknown_probes == 120
    assert result.rank1 > 0.9
    assert result.dir_at_fpir["0.01"] is not None


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
    assert "accuracy" in out and "lfw" in out or "tmp" in out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verification"][0]["num_pairs"] == 80
    assert len(report["verification"][0]["folds"]) == 2
    assert (tmp_path / "report" / f"roc_{report['verification'][0]['name']}.png").stat().st_size > 1000
