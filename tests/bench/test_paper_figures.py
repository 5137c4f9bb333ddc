"""The paper figures' helpers (bench/paper/figures.py) agree with the closed forms of the paper's Table 1."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from marginface.heads import Margin

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "paper" / "figures.py"


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("paper_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_boundaries_match_closed_forms(figures) -> None:
    right = math.pi / 2  # θ2 = 90°: cos θ2 = 0
    assert math.degrees(figures.boundary_theta1(Margin(1.0, 0.5, 0.0), right)) == pytest.approx(90 - 28.648, abs=0.02)
    assert figures.boundary_theta1(Margin(1.0, 0.0, 0.35), right) == pytest.approx(math.acos(0.35), abs=3e-4)
    assert figures.boundary_theta1(Margin(1.35, 0.0, 0.0), right) == pytest.approx(right / 1.35, abs=3e-4)
    assert figures.boundary_theta1(Margin(1.0, 0.0, 0.0), right) == pytest.approx(right, abs=3e-4)


def test_regions_are_disjoint_and_curves_decrease(figures) -> None:
    theta = np.linspace(0.0, math.pi, 91)
    for _, margin in figures.CURVES:
        class1, class2 = figures.decision_regions(margin, theta, theta)
        assert not (class1 & class2).any()
        assert np.all(np.diff(figures.target_logit_curve(margin, theta)) < 0)
    class1, class2 = figures.decision_regions(Margin(1.0, 0.5, 0.0), theta, theta)
    assert class1[10, 60] and class2[60, 10] and not (class1[45, 45] or class2[45, 45])  # margin band on θ1 = θ2
