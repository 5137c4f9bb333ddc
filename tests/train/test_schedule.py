"""The learning-rate schedule: linear warm-up, then polynomial decay."""

from __future__ import annotations

import pytest

from marginface.train.schedule import lr_factor


def test_warmup_then_polynomial_decay() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, power=2) == pytest.approx(0.25)
    assert lr_factor(100, 100, 10) == 0.0
