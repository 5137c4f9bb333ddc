"""CurricularFace, AdaFace and MagFace against independent float64 references (tests/heads/adaptive_reference.py):
loss, gradients for embeddings and centres and the state they keep, in full, chunked and Partial FC mode."""

from __future__ import annotations

import pytest
import torch

from marginface.heads import AdaFace, CurricularFace, MagFace

from . import adaptive_reference as ref
from .partial_fc_check import SAMPLE_RATE, check_partial_fc

DIM, CLASSES, BATCH = 12, 23, 10
RTOL, ATOL = 1e-5, 1e-10


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 batch with spread norms: two rows nearly opposite their class (the angle leaves [0, π] with
    the margin), one close to its centre with a large norm (AdaFace's angle falls below its clip)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    x = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)
    x[-2:] = -w[labels[-2:]] + 0.05 * torch.randn(2, DIM, generator=gen, dtype=torch.float64)
    x[0] = w[labels[0]] + 0.02 * torch.randn(DIM, generator=gen, dtype=torch.float64)
    norms = torch.linspace(2.0, 30.0, BATCH, dtype=torch.float64)
    norms[0], norms[-2:] = 60.0, 2.5  # AdaFace: ẑ = +1 close to the centre, −1 for the opposite rows
    return x / x.norm(dim=1, keepdim=True) * norms.unsqueeze(1), w, labels


def test_the_problem_reaches_every_region() -> None:
    """The rows of _problem cover the cases the heads treat apart (else the comparisons below prove less)."""
    import math

    x, w, labels = _problem()
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=1).t()
    theta = cos[torch.arange(BATCH), labels].acos()
    assert int((theta + 0.5 > math.pi).sum()) == 2  # CurricularFace: ψ past π
    hard = cos > torch.cos(theta + 0.5).unsqueeze(1)
    assert 0 < int(hard.sum()) < hard.numel() - BATCH  # some negatives re-weighted, some not
    head = _head("adaface")
    z = -head.margins(x)[0] / 0.4
    assert z.max() == 1.0 and z.min() == -1.0 and int((z.abs() < 1).sum()) > 2
    phi = theta - 0.4 * z
    assert int((phi < 1e-3).sum()) == 1 and int((phi > math.pi - 1e-3).sum()) == 2  # both ends of the clip


def _grads(loss: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gw = torch.autograd.grad(loss, (x, w))
    return gx, gw.to_dense()


def _close(got, expected) -> None:
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


MAGFACE = {"l_a": 3.0, "u_a": 40.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0}  # most norms of _problem inside


def _head(kind: str, **kwargs) -> torch.nn.Module:
    if kind == "magface":
        return MagFace(DIM, CLASSES, s=16.0, **MAGFACE, **kwargs).double()
    if kind == "curricularface":
        return CurricularFace(DIM, CLASSES, m=0.5, s=16.0, **kwargs).double()
    head = AdaFace(DIM, CLASSES, m=0.4, h=0.333, s=16.0, t_alpha=0.01, **kwargs).double()
    with torch.no_grad():  # statistics near these norms, so that ẑ spans its whole range and is clipped
        head.batch_mean.fill_(12.0)
        head.batch_std.fill_(3.0)
    return head


def _reference(kind: str, head, x, w, labels):
    """(reference loss, the head's state after it) from the head's state before."""
    if kind == "magface":
        return ref.magface(x, w, labels, **MAGFACE, s=16.0), {}
    if kind == "curricularface":
        loss, t = ref.curricularface(x, w, labels, 0.5, 16.0, float(head.t))
        return loss, {"t": t}
    loss, mean, std = ref.adaface(x, w, labels, 0.4, 0.333, 16.0, 0.01, float(head.batch_mean), float(head.batch_std))
    return loss, {"batch_mean": mean, "batch_std": std}


@pytest.mark.parametrize("kind", ["curricularface", "adaface"])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_two_steps_match_the_reference(kind: str, chunk_size: int | None) -> None:
    x0, w0, labels = _problem()
    head = _head(kind, chunk_size=chunk_size).train()
    for step in range(2):  # the second step sees the state the first one left
        x = (x0 * (1 + 0.3 * step)).requires_grad_(True)
        w = w0.clone().requires_grad_(True)
        with torch.no_grad():
            head.weight.copy_(w0)
        expected, state = _reference(kind, head, x, w, labels)
        loss = head(x, labels)
        torch.testing.assert_close(loss, expected, rtol=RTOL, atol=0)
        _close((torch.autograd.grad(loss, x)[0],), (torch.autograd.grad(expected, x, retain_graph=True)[0],))
        for name, value in state.items():
            assert getattr(head, name).item() == pytest.approx(value, rel=1e-12), name


@pytest.mark.parametrize("kind", ["curricularface", "adaface", "magface"])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradients_match_the_reference(kind: str, chunk_size: int | None) -> None:
    x0, w0, labels = _problem(1)
    head = _head(kind, chunk_size=chunk_size).train()
    with torch.no_grad():
        head.weight.copy_(w0)
    x = x0.clone().requires_grad_(True)
    w = w0.clone().requires_grad_(True)
    expected, _ = _reference(kind, head, x, w, labels)
    loss = head(x, labels)
    torch.testing.assert_close(loss, expected, rtol=RTOL, atol=0)
    gx, gw = torch.autograd.grad(loss, (x, head.weight))
    _close((gx, gw), _grads(expected, x, w))


@pytest.mark.parametrize("kind", ["curricularface", "adaface", "magface"])
def test_partial_fc_matches_the_reference_on_the_sampled_classes(kind: str) -> None:
    x0, w0, labels = _problem(2)
    head = _head(kind, sample_rate=SAMPLE_RATE).train()
    check_partial_fc(head, x0, w0, labels, lambda x, w, target: _reference(kind, head, x, w, target)[0])


@pytest.mark.parametrize("kind", ["curricularface", "adaface"])
def test_float32_loss_matches_and_eval_mode_keeps_the_state(kind: str) -> None:
    x0, w0, labels = _problem(3)
    head = _head(kind).train()
    with torch.no_grad():
        head.weight.copy_(w0)
    expected, _ = _reference(kind, head, x0, w0, labels)
    assert head.float()(x0.float(), labels).item() == pytest.approx(expected.item(), rel=1e-5)
    state = {name: value.clone() for name, value in head.named_buffers()}
    head.eval()(x0.float(), labels)
    logits = head.logits(x0.float(), labels)  # the inspection logits at the current state give the same loss
    assert torch.nn.functional.cross_entropy(logits, labels).item() == pytest.approx(
        head(x0.float(), labels).item(), rel=1e-5)
    for name, value in head.named_buffers():
        assert torch.equal(value, state[name]), f"{name} moved in eval mode"


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="AdaFace h must be a finite number > 0.0, got 0.0"):
        AdaFace(4, 3, h=0.0)
    with pytest.raises(ValueError, match=r"AdaFace t_alpha must be in \(0, 1\], got 1.5"):
        AdaFace(4, 3, t_alpha=1.5)
    with pytest.raises(ValueError, match="MagFace needs 0 < l_a < u_a, got l_a = 20, u_a = 10"):
        MagFace(4, 3, l_a=20, u_a=10)
    with pytest.raises(ValueError, match="CurricularFace m must be a finite number, got nan"):
        CurricularFace(4, 3, m=float("nan"))
