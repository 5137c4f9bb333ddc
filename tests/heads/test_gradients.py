"""torch.autograd.gradcheck of every head (float64) and of the fused loss in full and chunked mode."""

from __future__ import annotations

import pytest
import torch

from marginface.heads import (
    ArcFace,
    CosFace,
    MarginHead,
    NormFace,
    Softmax,
    SphereFace,
    SphereFaceOriginal,
    SubCenterArcFace,
    margin_softmax_cross_entropy,
)
from marginface.heads.margin import Margin

HEADS = {
    "arcface": lambda: ArcFace(6, 5, s=4.0),
    "cosface": lambda: CosFace(6, 5, s=4.0),
    "sphereface": lambda: SphereFace(6, 5, s=4.0),
    "normface": lambda: NormFace(6, 5, s=4.0),
    "combined": lambda: MarginHead(6, 5, s=4.0, m1=1.2, m2=0.3, m3=0.1),
    "combined_chunked": lambda: MarginHead(6, 5, s=4.0, m1=1.2, m2=0.3, m3=0.1, chunk_size=2),
    "softmax": lambda: Softmax(6, 5),
    "sphereface_original": lambda: SphereFaceOriginal(6, 5, m=4, lambda_=1.0),
    "subcenter": lambda: SubCenterArcFace(6, 5, sub_centers=2, s=4.0),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradcheck_head(name: str) -> None:
    torch.manual_seed(0)
    head = HEADS[name]().double()
    for p in head.parameters():
        torch.nn.init.normal_(p)  # well away from |cos| = 1 and ties
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 4, 1])
    params = list(head.parameters())

    def loss_of(x_in, *weights):
        with torch.no_grad():
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)
        return torch.func.functional_call(head, dict(zip([n for n, _ in head.named_parameters()],
                                                         weights, strict=True)), (x_in, labels))

    weights = [p.detach().clone().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(loss_of, (x, *weights), eps=1e-6, atol=1e-6, nondet_tol=1e-10)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 7])
@pytest.mark.parametrize("margin", [Margin(1.0, 0.5, 0.0), Margin(1.35, 0.2, 0.1), Margin(1.0, 0.0, 0.35)])
def test_gradcheck_fused(chunk_size: int | None, margin: Margin) -> None:
    torch.manual_seed(1)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 6, 2, 2, 5])
    assert torch.autograd.gradcheck(
        lambda a, b: margin_softmax_cross_entropy(a, b, target, margin, 3.0, chunk_size),
        (x, w), atol=1e-6, nondet_tol=1e-10,
    )


def test_chunked_equals_full_in_float32() -> None:
    torch.manual_seed(2)
    x = torch.randn(32, 64)
    labels = torch.randint(0, 1000, (32,))
    results = []
    for chunk in (None, 100, 333):
        head = ArcFace(64, 1000, chunk_size=chunk)
        torch.manual_seed(3)
        torch.nn.init.normal_(head.weight)
        xi = x.clone().requires_grad_(True)
        loss = head(xi, labels)
        loss.backward()
        results.append((loss.detach(), xi.grad, head.weight.grad))
    for loss, gx, gw in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-5, atol=0)
        torch.testing.assert_close(gx, results[0][1], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gw, results[0][2], rtol=1e-5, atol=1e-7)


def test_detach_margin_uses_plain_cosine_gradient() -> None:
    torch.manual_seed(4)
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    head = ArcFace(8, 10, detach_margin=True).double()
    labels = torch.randint(0, 10, (6,))
    head(x, labels).backward()
    # Same value, gradient as if the target logit were s·cos θ plus a constant.
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).t()
    rows = torch.arange(6)
    shift = (Margin(1.0, 0.5, 0.0).target_logit(cos[rows, labels]) - cos[rows, labels]).detach()
    logits = 64.0 * cos.index_put((rows, labels), cos[rows, labels] + shift)
    x2 = x.detach().clone().requires_grad_(True)
    cos2 = torch.nn.functional.normalize(x2, dim=1) @ torch.nn.functional.normalize(head.weight.detach(), dim=1).t()
    ref = torch.nn.functional.cross_entropy(64.0 * cos2.index_put((rows, labels), cos2[rows, labels] + shift), labels)
    ref.backward()
    assert head(x, labels).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    torch.testing.assert_close(x.grad, x2.grad)
