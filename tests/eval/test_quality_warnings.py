"""Degenerate embeddings and face-less photos are flagged with the result, not reported with confidence."""

from __future__ import annotations

import numpy as np

from marginface.eval.pipeline import quality_warnings


def test_zero_and_constant_embeddings_are_flagged() -> None:
    assert "every embedding is zero" in quality_warnings(np.zeros((6, 8)), 0, False)[0]
    constant = np.tile(np.arange(8.0), (6, 1)) * np.arange(1, 7)[:, None]  # same direction, any norm
    assert "same embedding" in quality_warnings(constant, 0, False)[0]
    assert "NaN/Inf" in quality_warnings(np.full((3, 4), np.nan), 0, False)[0]


def test_healthy_embeddings_pass_and_fallback_share_above_one_percent_warns() -> None:
    healthy = np.random.default_rng(0).normal(size=(200, 8))
    assert quality_warnings(healthy, 2, True) == []  # 1 % exactly: fine
    warnings = quality_warnings(healthy, 3, True)
    assert len(warnings) == 1 and "3 of 200 images (1.5 %)" in warnings[0] and "no face was found" in warnings[0]
    assert "no --detector" in quality_warnings(healthy, 50, False)[0]
