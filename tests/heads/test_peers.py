"""Agreement with pytorch-metric-learning given the same class centres (its W is (D, C), margins in degrees)."""

from __future__ import annotations

import math

import pytest
import torch

from marginface.heads import ArcFace, CosFace, SubCenterArcFace

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")


def _batch(dim: int, classes: int, batch: int = 32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen), torch.randint(0, classes, (batch,), generator=gen)


def _check(ours: torch.nn.Module, peer: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> None:
    """Loss (float32) and gradients (float64, so that summation order does not blur the comparison)."""
    with torch.no_grad():
        peer.W.copy_(ours.weight.t())
    assert ours(x, labels).item() == pytest.approx(peer(x, labels).item(), rel=1e-5)
    ours, peer, x = ours.double(), peer.double(), x.double()
    with torch.no_grad():
        peer.W.copy_(ours.weight.t())
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    loss_ours, loss_peer = ours(xa, labels), peer(xb, labels)
    assert loss_ours.item() == pytest.approx(loss_peer.item(), rel=1e-12)
    loss_ours.backward()
    loss_peer.backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours.weight.grad, peer.W.grad.t(), rtol=1e-9, atol=1e-12)


def test_arcface_matches_pml() -> None:
    x, labels = _batch(64, 100)
    _check(ArcFace(64, 100, s=64.0, m=0.5),
           pml_losses.ArcFaceLoss(100, 64, margin=math.degrees(0.5), scale=64), x, labels)


def test_cosface_matches_pml() -> None:
    x, labels = _batch(64, 100, seed=1)
    _check(CosFace(64, 100, s=64.0, m=0.35), pml_losses.CosFaceLoss(100, 64, margin=0.35, scale=64), x, labels)


def test_subcenter_arcface_matches_pml() -> None:
    x, labels = _batch(32, 20, seed=2)
    ours = SubCenterArcFace(32, 20, sub_centers=3)
    peer = pml_losses.SubCenterArcFaceLoss(num_classes=20, embedding_size=32, margin=math.degrees(0.5),
                                           scale=64, sub_centers=3)
    _check(ours, peer, x, labels)
    ours_idx, ours_dominant = ours.outliers(x, labels, threshold_degrees=75)
    peer_idx, peer_centres = peer.get_outliers(x, labels, threshold=75)
    assert sorted(ours_idx.tolist()) == sorted(peer_idx.tolist())
    present = torch.unique(labels)
    for c in present.tolist():
        expected = ours.weight[c * 3 + ours_dominant[c]].detach()
        torch.testing.assert_close(peer_centres[:, c].double(), expected.double())
