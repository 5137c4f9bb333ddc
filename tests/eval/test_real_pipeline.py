"""The real path on real data: YuNet alignment + pretrained MobileFaceNet ONNX on LFW (two folds), ORL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marginface.data import read_pairs_txt
from marginface.eval.pipeline import evaluate_identity_folder, evaluate_pair_set
from marginface.eval.verification import evaluate_verification
from marginface.infer.detect import YuNetDetector
from marginface.infer.embedder import OnnxEmbedder
from marginface.infer.prepare import FacePreprocessor

pytestmark = pytest.mark.slow
REPORT = Path(__file__).resolve().parents[2] / "bench" / "results" / "lfw_mobilefacenet" / "report.json"
# Evaluation is deterministic (no seed on the verification path; ORL's split is seeded), so the figures are those
# of the committed report up to float jitter between runtimes and thread counts: at most one pair or one probe.


def _report() -> dict:
    return json.loads(REPORT.read_text())


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
    report = {fold["fold"]: fold for fold in _report()["verification"][0]["folds"]}
    for fold in (0, 1):  # at the report's thresholds (10-fold: chosen on the other nine), its fold accuracies
        chosen = pairs.folds == fold
        accuracy = float(np.mean((result.scores[chosen] > report[fold]["threshold"]) == result.issame[chosen]))
        assert accuracy == pytest.approx(report[fold]["accuracy"], abs=1.01 / chosen.sum()), fold  # 98.83, 99.67
    two_fold = [fold.accuracy for fold in result.verification.folds]  # thresholds chosen on the other fold only
    assert two_fold == pytest.approx([report[0]["accuracy"], report[1]["accuracy"]], abs=1.01 / 600)
    assert result.verification.accuracy_mean == pytest.approx(0.9925, abs=1.01 / 600)  # their mean
    assert result.verification.auc > 0.99
    # arcface_torch's grid search on the same scores (the search is passed through evaluate_pair_set:
    # tests/eval/test_perturbed_eval.py; embedding these 1,200 pairs a second time would check nothing more)
    grid = evaluate_verification(result.scores, result.issame, pairs.folds, search="grid")
    assert grid.threshold_search == "grid"
    assert abs(grid.accuracy_mean - result.verification.accuracy_mean) < 0.01


def test_orl_identification(shared_data: Path, model: OnnxEmbedder, detector: YuNetDetector) -> None:
    result = evaluate_identity_folder(shared_data / "orl_att_faces" / "att_faces", model, FacePreprocessor(detector),
                                      min_images=10)
    assert result.num_gallery == 28 and result.num_unknown_probes == 120
    report = _report()["identification"]["att_faces"]  # 99.60 %, DIR 98.81 / 98.41 %
    one_probe = 1.01 / result.num_probes
    assert result.rank1 == pytest.approx(report["rank1"], abs=one_probe)
    assert result.rank5 == pytest.approx(report["rank5"], abs=one_probe)
    for fpir in ("0.1", "0.01"):
        assert result.dir_at_fpir[fpir] == pytest.approx(report["dir_at_fpir"][fpir], abs=one_probe), fpir
