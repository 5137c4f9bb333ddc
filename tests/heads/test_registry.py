"""Every registered head, tested by being registered: the Head contract, finite loss and gradients, its
listed options accepted by its constructor, and a state_dict round trip that reproduces the loss."""

from __future__ import annotations

import inspect

import pytest
import torch

from marginface.heads import Head, MarginHead
from marginface.heads.contract import missing_head_members
from marginface.heads.registry import HEADS, get_head, head_names

DIM, CLASSES, BATCH = 8, 5, 6


def _accepted(build) -> set[str]:
    """Keyword names `build` accepts, following **kwargs into MarginHead (the presets forward them)."""
    names: set[str] = set()
    for param in inspect.signature(build).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            names |= _accepted(MarginHead)
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(param.name)
    return names


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, DIM, generator=gen) * 5, torch.tensor([0, 1, 4, 2, 2, 3])


@pytest.mark.parametrize("name", head_names())
def test_registered_head_satisfies_the_contract(name: str) -> None:
    entry = HEADS[name]
    assert set(entry.options) <= _accepted(entry.build), "an option the constructor does not take"
    if entry.sharded:
        assert {"rows", "group"} <= _accepted(entry.build)
    head = get_head(name, DIM, CLASSES)
    assert isinstance(head, Head) and missing_head_members(head) == []
    assert head.weight.shape[0] % CLASSES == 0 and head.weight.shape[1] == DIM


@pytest.mark.parametrize("name", head_names())
def test_registered_head_loss_and_gradients_are_finite(name: str) -> None:
    torch.manual_seed(0)
    head = get_head(name, DIM, CLASSES).train()
    x, labels = _batch()
    x.requires_grad_(True)
    loss = head(x, labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", head_names())
def test_registered_head_state_round_trip_reproduces_the_loss(name: str) -> None:
    torch.manual_seed(1)
    head = get_head(name, DIM, CLASSES).train()
    x, labels = _batch(1)
    head(x, labels)  # a training step moves whatever state the head keeps (EMAs, random streams)
    copy = get_head(name, DIM, CLASSES).train()
    copy.load_state_dict(head.state_dict())
    assert torch.equal(head(x, labels), copy(x, labels))
    for (key, a), (_, b) in zip(head.state_dict().items(), copy.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_unknown_names_and_options_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown head 'arc'; choose one of \["):
        get_head("arc", DIM, CLASSES)
    with pytest.raises(ValueError, match=r"head 'softmax' does not take \['s'\]"):
        get_head("softmax", DIM, CLASSES, s=64.0)
    with pytest.raises(ValueError, match="trains in one process only"):
        get_head("subcenter", DIM, CLASSES, rows=(0, CLASSES))
