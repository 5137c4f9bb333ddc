"""The real path on real data: YuNet alignment + pretrained MobileFaceNet ONNX on LFW (two folds), ORL."""

from __future__ import annotations

from pathlib import Path

import pytest

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
