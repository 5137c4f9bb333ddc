"""The all-pairs calibration report: readable by Threshold.from_report, same cut as the eval code."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.cluster.calibrate import cluster_threshold, pairs_report, write_pairs_report
from marginface.eval.verification import threshold_at_far
from tests.cluster.conftest import blobs


def test_report_threshold_matches_eval_machinery(tmp_path) -> None:
    x, truth = blobs(people=8, per=6, noise=0.3)
    path = write_pairs_report(tmp_path / "report.json", x, truth, "blobs", fars=(1e-2, 1e-3, 1e-6))
    i, j = np.triu_indices(len(x), 1)
    scores = (x[i] * x[j]).sum(axis=1)
    same = truth[i] == truth[j]
    for far in (1e-2, 1e-3):
        cut = cluster_threshold(path, far=far)
        assert cut.value == pytest.approx(threshold_at_far(scores, same, far), abs=1e-6)  # float32 rounding
        assert "blobs FAR" in cut.source
    entry = pairs_report(x, truth, "blobs", fars=(1e-6,))["verification"][0]
    assert entry["threshold_at_far"]["1e-06"] is None and "not measurable" in entry["far_notes"]["1e-06"]
