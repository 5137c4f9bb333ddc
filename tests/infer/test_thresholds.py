"""Thresholds: the eval report stores them (per FAR, per FPIR, best accuracy) and Threshold reads them back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marginface.eval.identification import evaluate_identification, split_gallery_probes
from marginface.eval.verification import evaluate_verification, threshold_at_far
from marginface.infer.thresholds import Threshold, ThresholdError


def _pairs(seed: int = 0, n: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    issame = np.arange(n) % 2 == 0
    scores = np.where(issame, rng.normal(0.6, 0.15, n), rng.normal(0.1, 0.12, n)).astype(np.float32)
    return scores, issame, np.arange(n) % 10


@pytest.mark.parametrize("far", [1e-1, 1e-2, 1e-3])
def test_far_threshold_is_the_strictest_cut_meeting_the_far(far: float) -> None:
    scores, issame, _ = _pairs()
    value = threshold_at_far(scores, issame, far)
    impostors = scores[~issame].astype(np.float64)
    assert np.mean(impostors >= value) <= far  # holds the FAR ...
    lower = np.max(impostors[impostors < value])
    assert np.mean(impostors >= lower) > far  # ... and is the lowest threshold that does


def test_report_stores_thresholds_and_threshold_reads_them(tmp_path: Path) -> None:
    scores, issame, folds = _pairs()
    verification = evaluate_verification(scores, issame, folds)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(30, 16))
    labels = np.repeat(np.arange(30), 6)
    embeddings = (centres[labels] + 0.5 * rng.normal(size=(180, 16))).astype(np.float32)
    identification = evaluate_identification(embeddings, split_gallery_probes(labels, 1, 5, 0.3))
    report = {"verification": [{"name": "lfw", **verification.to_dict()}],
              "identification": {"ids": identification.to_dict()}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))

    far = Threshold.from_report(path, far=1e-2)
    assert far.value == verification.threshold_at_far["0.01"]
    assert far.source == f"report {path}: lfw FAR 0.01"
    best = Threshold.from_report(path)
    assert best.value == verification.accuracy_threshold and "best accuracy" in best.source
    assert np.mean((scores >= best.value) == issame) >= max(f.accuracy for f in verification.folds) - 0.05
    fpir = Threshold.from_report(path, fpir=0.1)
    assert fpir.value == identification.threshold_at_fpir["0.1"]
    assert fpir.source == f"report {path}: ids FPIR 0.1"
    with pytest.raises(ThresholdError, match="not measurable"):
        Threshold.from_report(path, far=1e-6)
    with pytest.raises(ThresholdError, match=r"no threshold for FAR 0.005; available"):
        Threshold.from_report(path, far=5e-3)
    with pytest.raises(ThresholdError, match="no verification set named 'cfp'"):
        Threshold.from_report(path, far=1e-2, set_name="cfp")


def test_reports_without_thresholds_and_bad_files_are_explained(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"verification": [{"name": "lfw", "tar_at_far": {"0.001": 0.9}}],
                               "identification": {"a": {}, "b": {}}}))
    with pytest.raises(ThresholdError, match="no threshold_at_far .*rerun marginface eval"):
        Threshold.from_report(old, far=1e-3)
    with pytest.raises(ThresholdError, match=r"several identification sets \['a', 'b'\]"):
        Threshold.from_report(old, fpir=0.01)
    with pytest.raises(ThresholdError, match="does not exist"):
        Threshold.from_report(tmp_path / "missing.json", far=1e-3)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ThresholdError, match="not a readable eval report"):
        Threshold.from_report(tmp_path / "bad.json")


def test_fixed_threshold_round_trip_and_decisions() -> None:
    t = Threshold.fixed(0.42)
    assert t.to_dict() == {"value": 0.42, "source": "fixed"} and Threshold.from_dict(t.to_dict()) == t
    assert t.accepts(0.42) and not t.accepts(0.4199)
    with pytest.raises(ThresholdError, match=r"lies in \[-1, 1\]"):
        Threshold.fixed(1.5)
    with pytest.raises(ThresholdError, match="must be finite"):
        Threshold(float("nan"), "x")


def test_shipped_auto_thresholds_are_the_reports() -> None:
    from marginface.infer.published import published, published_threshold
    from tests.conftest import REPO_ROOT

    report = REPO_ROOT / "bench" / "results" / "lfw_mobilefacenet" / "report.json"
    identify = Threshold.from_report(report, fpir=0.01, set_name="lfw-deepfunneled")
    verify = Threshold.from_report(report, far=1e-3)
    assert published_threshold("identify").value == identify.value
    assert published_threshold("verify").value == verify.value
    shipped = published()["thresholds"]
    assert all("marginface eval" in shipped[task]["command"] and "report.json" in shipped[task]["source"]
               for task in ("verify", "identify"))
    calibration = REPO_ROOT / "bench" / "results" / "cluster" / "calibration_orl.json"  # the clustering cut
    assert published_threshold("cluster").value == Threshold.from_report(calibration, far=1e-4).value
    assert "bench/cluster.py" in shipped["cluster"]["command"]
    assert "calibration_orl.json" in shipped["cluster"]["source"]
    assert json.loads(report.read_text())["model"].endswith("mobilefacenet_dynamic_batch.onnx")


def test_resolve_decides_fixed_report_or_shipped_once(tmp_path: Path) -> None:
    """Threshold.resolve: the CLI, FaceRecognizer and `gallery create` (hence the service) all go through it."""
    from marginface.infer.published import published_threshold

    assert Threshold.resolve("verify", value=0.3) == Threshold.fixed(0.3)
    kept = Threshold(0.25, "gallery")
    assert Threshold.resolve("identify", value=kept, model="m.onnx") is kept
    assert Threshold.resolve("identify") == published_threshold("identify")
    assert Threshold.resolve("verify", model="m.onnx", required=False) is None
    with pytest.raises(ThresholdError, match="no threshold for model m.onnx"):
        Threshold.resolve("verify", model="m.onnx")
    with pytest.raises(ThresholdError, match="not both"):
        Threshold.resolve("verify", value=0.3, report=tmp_path / "report.json", far=1e-3)
    with pytest.raises(ThresholdError, match="--far or --fpir"):
        Threshold.resolve("identify", report=tmp_path / "report.json")
    with pytest.raises(ThresholdError, match="need --report"):
        Threshold.resolve("verify", far=1e-3)
