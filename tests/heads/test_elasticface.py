"""ElasticFace against an independent float64 reference (tests/heads/adaptive_reference.py) given the same drawn
margins: loss and gradients for embeddings and centres in full, chunked and Partial FC mode, for both kinds
and the "+" ordering; the draws themselves (reproducible, N(m, std²), a resumable stream); bad parameters."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from marginface.heads import ArcFace, CosFace, ElasticFace, get_head
from marginface.seeding import head_seed

from . import adaptive_reference as ref
from .partial_fc_check import SAMPLE_RATE, check_partial_fc

DIM, CLASSES, BATCH, S = 12, 23, 10, 16.0
RTOL, ATOL = 1e-5, 1e-10
SPREAD = {"arc": (0.5, 0.2), "cos": (0.35, 0.2)}  # wide draws: a wrong assignment of margins shows in the loss
CASES = [(kind, plus) for kind in ("arc", "cos") for plus in (False, True)]


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 batch; two rows nearly opposite their class, so θ_y + m_b passes π (ψ's continuation)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    x = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)
    x[-2:] = -w[labels[-2:]] + 0.05 * torch.randn(2, DIM, generator=gen, dtype=torch.float64)
    return x * torch.linspace(2.0, 30.0, BATCH, dtype=torch.float64).unsqueeze(1), w, labels


def _head(kind: str, plus: bool, seed: int = 3, **kwargs) -> ElasticFace:
    m, std = SPREAD[kind]
    return ElasticFace(DIM, CLASSES, kind=kind, m=m, std=std, plus=plus, s=S, seed=seed, **kwargs).double().train()


def _next_draws(head: ElasticFace, count: int = BATCH) -> torch.Tensor:
    """The margins the head's next training step draws (from a copy: the head's own stream stays put)."""
    return copy.deepcopy(head).draw(count)


def _close(got, expected) -> None:
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def test_the_problem_reaches_past_pi_and_spreads_the_margins() -> None:
    x, w, labels = _problem()
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=1).t()
    theta = cos[torch.arange(BATCH), labels].acos()
    draws = _next_draws(_head("arc", False))
    assert int((theta + draws > math.pi).sum()) >= 1  # the arc target uses ψ past π
    assert float(draws.max() - draws.min()) > 0.3


@pytest.mark.parametrize(("kind", "plus"), CASES)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_two_steps_match_the_reference(kind: str, plus: bool, chunk_size: int | None) -> None:
    x0, w0, labels = _problem(1)
    head = _head(kind, plus, chunk_size=chunk_size)
    with torch.no_grad():
        head.weight.copy_(w0)
    for step in range(2):  # the second step draws the stream's next values
        x = (x0 * (1 + 0.3 * step)).requires_grad_(True)
        w = w0.clone().requires_grad_(True)
        expected = ref.elasticface(x, w, labels, _next_draws(head), kind, S, plus)
        loss = head(x, labels)
        torch.testing.assert_close(loss, expected, rtol=RTOL, atol=0)
        gx, gw = torch.autograd.grad(loss, (x, head.weight))
        _close((gx, gw), torch.autograd.grad(expected, (x, w)))


@pytest.mark.parametrize(("kind", "plus"), CASES)
def test_partial_fc_matches_the_reference_on_the_sampled_classes(kind: str, plus: bool) -> None:
    x0, w0, labels = _problem(2)
    head = _head(kind, plus, sample_rate=SAMPLE_RATE)
    # the margins come from the head's own stream, not the class sample's seed
    check_partial_fc(head, x0, w0, labels,
                     lambda x, w, target: ref.elasticface(x, w, target, _next_draws(head), kind, S, plus))


def test_plus_gives_the_harder_rows_the_larger_margins() -> None:
    gen = torch.Generator().manual_seed(0)
    cos_y, draws = torch.rand(50, generator=gen, dtype=torch.float64) * 2 - 1, torch.randn(50, generator=gen).double()
    margins = ElasticFace.by_difficulty(draws, cos_y)
    assert torch.equal(margins.sort().values, draws.sort().values)  # the same draws, handed out anew
    order = cos_y.argsort()  # hardest first
    assert bool((margins[order].diff() <= 0).all())


def test_draws_are_the_seeded_stream_and_resume_from_the_buffer() -> None:
    head = _head("arc", False, seed=5)
    first = head.draw(20_000)
    assert torch.equal(first, _head("arc", False, seed=5).draw(20_000))  # same seed, same draws
    assert not torch.equal(first[:10], _head("arc", False, seed=6).draw(10))
    expected = torch.empty(20_000, dtype=torch.float64).normal_(0.5, 0.2, generator=torch.Generator().manual_seed(
        head_seed(5)))
    assert torch.equal(first, expected)  # N(m, std²) from the seeded generator, nothing else
    assert first.mean().item() == pytest.approx(0.5, abs=5e-3) and first.std().item() == pytest.approx(0.2, rel=2e-2)
    x, _, labels = _problem()
    head(x, labels)
    resumed = _head("arc", False, seed=99)  # the seed is only where a fresh stream starts
    resumed.load_state_dict(head.state_dict())
    assert torch.equal(resumed.draw(30), head.draw(30))


@pytest.mark.parametrize(("kind", "preset"), [("arc", ArcFace), ("cos", CosFace)])
def test_std_zero_is_the_fixed_margin_and_eval_mode_draws_nothing(kind: str, preset) -> None:
    x, w, labels = _problem(4)

    def fixed(m: float) -> torch.Tensor:
        head = preset(DIM, CLASSES, s=S, m=m).double()
        with torch.no_grad():
            head.weight.copy_(w)
        return head(x, labels)

    for head in (ElasticFace(DIM, CLASSES, kind=kind, std=0.0, s=S).double().train(), _head(kind, False).eval()):
        with torch.no_grad():
            head.weight.copy_(w)
        state = head.generator_state.clone()
        torch.testing.assert_close(head(x, labels), fixed(head.m), rtol=1e-12, atol=0)
        assert torch.equal(head.generator_state, state) != head.training  # training draws, eval does not


def test_defaults_are_the_released_config() -> None:
    for (kind, plus), (m, std) in {("arc", False): (0.5, 0.05), ("arc", True): (0.5, 0.0175),
                                   ("cos", False): (0.35, 0.05), ("cos", True): (0.35, 0.02)}.items():
        head = get_head("elasticface", 4, 3, kind=kind, plus=plus)
        assert (head.m, head.std, head.s) == (m, std, 64.0)
        assert (head.margin.m2, head.margin.m3) == ((m, 0.0) if kind == "arc" else (0.0, m))


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="ElasticFace kind must be 'arc' or 'cos', got 'sphere'"):
        ElasticFace(4, 3, kind="sphere")
    with pytest.raises(ValueError, match="ElasticFace std must be a finite number >= 0.0, got -0.1"):
        ElasticFace(4, 3, std=-0.1)
    with pytest.raises(ValueError, match="ElasticFace m must be a finite number, got nan"):
        ElasticFace(4, 3, m=float("nan"))
    with pytest.raises(ValueError, match="ElasticFace plus must be true or false, got 'yes'"):
        ElasticFace(4, 3, plus="yes")
    with pytest.raises(ValueError, match="ElasticFace seed must be an integer, got 1.5"):
        ElasticFace(4, 3, seed=1.5)
