"""The target-logit transform: monotonic on [0, π], finite gradients, the paper's decision boundaries."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marginface.heads import ArcFace, CosFace, MarginHead, NormFace, Softmax, SphereFace, SphereFaceOriginal
from marginface.heads.margin import ARCFACE, COSFACE, NORMFACE, SPHEREFACE, Margin

THETA = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)


@pytest.mark.parametrize("margin", [ARCFACE, COSFACE, SPHEREFACE, NORMFACE, Margin(4.0, 0.0, 0.0),
                                    Margin(1.35, 0.5, 0.35), Margin(2.5, 1.5, 0.0)])
def test_target_logit_decreases_in_theta(margin: Margin) -> None:
    values = margin.target_logit(torch.cos(THETA))
    assert torch.all(values[1:] < values[:-1] + 1e-12)
    assert values[0] > values[-1]


@settings(max_examples=60, deadline=None)
@given(m1=st.floats(0.5, 4.0), m2=st.floats(0.0, 1.5), m3=st.floats(0.0, 0.5))
def test_combined_margins_always_monotonic(m1: float, m2: float, m3: float) -> None:
    values = Margin(m1, m2, m3).target_logit(torch.cos(THETA))
    assert torch.all(torch.diff(values) <= 1e-9)


def test_all_three_margins_act_together() -> None:
    cos = torch.tensor([0.3], dtype=torch.float64)
    theta = math.acos(0.3)
    value = Margin(1.2, 0.3, 0.1).target_logit(cos).item()
    assert value == pytest.approx(math.cos(1.2 * theta + 0.3) - 0.1, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_finite_at_unit_cosine(dtype: torch.dtype) -> None:
    cos = torch.tensor([1.0, -1.0, 0.999999, -0.999999], dtype=dtype, requires_grad=True)
    ARCFACE.target_logit(cos).sum().backward()
    assert torch.all(torch.isfinite(cos.grad))


def test_bf16_input_computed_in_float32() -> None:
    out = ARCFACE.target_logit(torch.tensor([0.5], dtype=torch.bfloat16))
    assert out.dtype == torch.float32


def test_invalid_margin_rejected() -> None:
    with pytest.raises(ValueError, match="m1"):
        Margin(0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="m2"):
        Margin(1.0, float("nan"), 0.0)


def _two_class_logits(head: torch.nn.Module, theta1: float, theta2: float) -> torch.Tensor:
    """Logits of a unit-norm 2-D sample at angle θ1 from centre 0 and θ2 from centre 1 (label 0)."""
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [math.cos(theta1 + theta2), math.sin(theta1 + theta2)]],
                                        dtype=torch.float64))
    x = torch.tensor([[math.cos(theta1), math.sin(theta1)]], dtype=torch.float64)
    return head.logits(x, torch.tensor([0]))[0]


# Table 1 of the ArcFace paper: the binary decision boundary for class 1 of each loss.
@pytest.mark.parametrize(
    "make, theta2_of",
    [
        (lambda: NormFace(2, 2, s=1.0), lambda t1: t1),                                  # cos θ1 = cos θ2
        (lambda: ArcFace(2, 2, s=1.0, m=0.5), lambda t1: t1 + 0.5),                      # θ1 + m = θ2
        (lambda: CosFace(2, 2, s=1.0, m=0.35), lambda t1: math.acos(math.cos(t1) - 0.35)),  # cos θ1 − m = cos θ2
        (lambda: SphereFace(2, 2, s=1.0, m=1.35), lambda t1: 1.35 * t1),                 # m θ1 = θ2
        (lambda: MarginHead(2, 2, s=1.0, m1=1.2, m2=0.2, m3=0.1),
         lambda t1: math.acos(math.cos(1.2 * t1 + 0.2) - 0.1)),                           # combined
    ],
)
@pytest.mark.parametrize("theta1", [0.2, 0.5, 0.9])
def test_binary_decision_boundary(make, theta2_of, theta1: float) -> None:
    head = make().double()
    theta2 = theta2_of(theta1)
    logits = _two_class_logits(head, theta1, theta2)
    assert logits[0].item() == pytest.approx(logits[1].item(), abs=1e-9)
    # Slightly closer to class 0 wins, slightly farther loses.
    closer = _two_class_logits(head, theta1 - 0.01, theta2 + 0.01)
    assert closer[0] > closer[1]


def test_sphereface_original_boundary() -> None:
    head = SphereFaceOriginal(2, 2, m=4).double()
    theta1 = 0.3
    logits = _two_class_logits(head, theta1, 4 * theta1)  # ‖x‖ cos(mθ1) = ‖x‖ cos θ2
    assert logits[0].item() == pytest.approx(logits[1].item(), abs=1e-9)


def test_softmax_boundary_is_linear() -> None:
    head = Softmax(2, 2).double()
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        head.fc.bias.copy_(torch.tensor([0.5, 1.0]))
    # ‖W1‖‖x‖cos θ1 + b1 = ‖W2‖‖x‖cos θ2 + b2 at x = (1, 1.5): 2 + 0.5 = 1.5 + 1
    logits = head.logits(torch.tensor([[1.0, 1.5]], dtype=torch.float64))[0]
    assert logits[0].item() == pytest.approx(logits[1].item())
