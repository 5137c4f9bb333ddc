"""Every head and preset against the loop-based float64 reference, in float32 and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from marginface.heads import ArcFace, CosFace, MarginHead, NormFace, SphereFace, SubCenterArcFace

from .reference import reference_loss

PRESETS = {
    "arcface": (lambda d, c, **kw: ArcFace(d, c, **kw), (1.0, 0.5, 0.0)),
    "cosface": (lambda d, c, **kw: CosFace(d, c, **kw), (1.0, 0.0, 0.35)),
    "sphereface": (lambda d, c, **kw: SphereFace(d, c, **kw), (1.35, 0.0, 0.0)),
    "normface": (lambda d, c, **kw: NormFace(d, c, **kw), (1.0, 0.0, 0.0)),
    "combined": (lambda d, c, **kw: MarginHead(d, c, m1=1.2, m2=0.3, m3=0.1, **kw), (1.2, 0.3, 0.1)),
    "sphereface_int": (lambda d, c, **kw: MarginHead(d, c, m1=4.0, m2=0.0, m3=0.0, **kw), (4.0, 0.0, 0.0)),
}


def _problem(dim: int = 16, classes: int = 37, batch: int = 12, seed: int = 0):
    """Random problem whose last rows point away from their class so that m1·θ + m2 passes π."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, dim, generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    x = torch.randn(batch, dim, generator=gen)
    x[-3:] = -w[labels[-3:]] + 0.05 * torch.randn(3, dim, generator=gen)
    x[0] = w[labels[0]] * 3.0 + 0.01 * torch.randn(dim, generator=gen)  # θ near 0
    return x, w, labels


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_head_matches_reference_float32(name: str, chunk_size: int | None) -> None:
    make, (m1, m2, m3) = PRESETS[name]
    x, w, labels = _problem()
    head = make(16, 37, chunk_size=chunk_size)
    with torch.no_grad():
        head.weight.copy_(w)
    expected = reference_loss(x, w, labels, 64.0, m1, m2, m3)
    assert head(x, labels).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_head_matches_reference_under_bf16_autocast(name: str) -> None:
    make, (m1, m2, m3) = PRESETS[name]
    x, w, labels = _problem(seed=1)
    head = make(16, 37)
    with torch.no_grad():
        head.weight.copy_(w)
    x16 = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(x16, labels)
    assert loss.dtype == torch.float32, "margin math must stay float32 under autocast"
    expected = reference_loss(x16.double(), w, labels, 64.0, m1, m2, m3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_logits_method_matches_reference() -> None:
    x, w, labels = _problem(seed=2)
    head = MarginHead(16, 37, m1=1.1, m2=0.2, m3=0.05)
    with torch.no_grad():
        head.weight.copy_(w)
    loss = torch.nn.functional.cross_entropy(head.logits(x, labels), labels)
    assert loss.item() == pytest.approx(reference_loss(x, w, labels, 64.0, 1.1, 0.2, 0.05), rel=1e-5)
    plain = head.logits(x)
    assert plain.shape == (12, 37)
    assert torch.all(plain.abs() <= 64.0 + 1e-3)


@pytest.mark.parametrize("dtype_ctx", ["float32", "bf16"])
def test_subcenter_matches_reference(dtype_ctx: str) -> None:
    gen = torch.Generator().manual_seed(3)
    head = SubCenterArcFace(16, 11, sub_centers=3)
    w = torch.randn(33, 16, generator=gen)
    with torch.no_grad():
        head.weight.copy_(w)
    x = torch.randn(9, 16, generator=gen)
    labels = torch.randint(0, 11, (9,), generator=gen)
    if dtype_ctx == "bf16":
        x = x.to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = head(x, labels)
    else:
        loss = head(x, labels)
    expected = reference_loss(x.double(), w, labels, 64.0, 1.0, 0.5, 0.0, sub_centers=3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
