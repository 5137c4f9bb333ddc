"""head.kind builds every registered head through the registry: options checked and named, and each
head's whole state (centres and buffers) saved and resumed by the trainer's checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from marginface.heads import head_names
from marginface.train.distributed import DistContext
from marginface.train.trainer import Trainer

from .helpers import tiny_config


@pytest.mark.parametrize("kind", head_names())
def test_every_head_kind_checkpoints_and_resumes_its_whole_state(tmp_path: Path, kind: str) -> None:
    trainer = Trainer(tiny_config(tmp_path / kind, f"head.kind={kind}"))
    head = trainer.head.train()
    with torch.no_grad():
        head.weight.normal_()
    head(torch.randn(8, 16) * 4, torch.arange(8) % 6)  # moves any state the head keeps
    trainer.step = 1
    path = trainer.save()
    resumed = Trainer(tiny_config(tmp_path / kind, f"head.kind={kind}"))
    assert resumed.resume(str(path)) and resumed.step == 1
    assert type(resumed.head) is type(head)
    saved, loaded = head.state_dict(), resumed.head.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key], loaded[key]), key


def test_head_options_are_checked_and_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"head.kind = 'arc'; choose one of \["):
        tiny_config(tmp_path, "head.kind=arc")
    with pytest.raises(ValueError, match=r"head.kwargs.h = 0.3 is not an option of head.kind = 'subcenter'"):
        tiny_config(tmp_path, "head.kind=subcenter", "head.kwargs={h: 0.3}")
    with pytest.raises(ValueError, match=r"head.m2 = 0.3 does not apply to head.kind = 'sphereface_original'"):
        tiny_config(tmp_path, "head.kind=sphereface_original", "head.m2=0.3")
    with pytest.raises(ValueError, match=r"head.kwargs.s = 3: set head.s instead"):
        tiny_config(tmp_path, "head.kind=arcface", "head.kwargs={s: 3}")
    with pytest.raises(ValueError, match=r"head \(kind = 'subcenter'.*sub_centers must be >= 1, got 0"):
        tiny_config(tmp_path, "head.kind=subcenter", "head.kwargs={sub_centers: 0}")
    config = tiny_config(tmp_path, "head.kind=sphereface_original", "head.kwargs={m: 3, lambda_: 5.0}")
    head = Trainer(config).head
    assert head.margin.m1 == 3.0 and head.lambda_ == 5.0


def test_subcenter_trains_from_spread_centres_and_is_refused_under_model_parallel(tmp_path: Path) -> None:
    from marginface.heads import spread_centres

    config = tiny_config(tmp_path / "run", "head.kind=subcenter", "head.kwargs={sub_centers: 2}",
                         "head.init=spread", "optim.max_steps=1")
    trainer = Trainer(config)
    assert trainer.head.weight.shape == (12, 16) and trainer.weight_rows == 12
    torch.testing.assert_close(trainer.head.weight.detach(), spread_centres(6, 16).repeat_interleave(2, 0))
    assert trainer.train().steps == 1
    two = DistContext(rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"head.kind = 'subcenter' trains in one process only"):
        Trainer(config, two)


@pytest.mark.parametrize("head", [("head.kind=curricularface",), ("head.kind=adaface",),
                                  ("head.kind=elasticface",), ("head.kind=elasticface", "head.kwargs={plus: true}")],
                         ids=["curricularface", "adaface", "elasticface", "elasticface_plus"])
def test_stateful_head_resumes_bit_identically(tmp_path: Path, head: tuple[str, ...]) -> None:
    from safetensors.torch import load_file

    from marginface.train.checkpoint import latest_valid

    extra = (*head, "checkpoint_every=1")
    initial = Trainer(tiny_config(tmp_path / "fresh", *extra)).head.state_dict()
    Trainer(tiny_config(tmp_path / "straight", *extra, "optim.max_steps=2")).train()
    Trainer(tiny_config(tmp_path / "resumed", *extra, "optim.max_steps=1")).train()
    trainer = Trainer(tiny_config(tmp_path / "resumed", *extra, "optim.max_steps=2"))
    assert trainer.resume("auto") and trainer.step == 1
    trainer.train()
    straight, resumed = (load_file(str(latest_valid(tmp_path / run).path / "weights.safetensors"))
                         for run in ("straight", "resumed"))
    state = [key for key in straight if key.startswith("head.") and key != "head.weight"]
    assert straight.keys() == resumed.keys() and state
    for key in state:  # the state moved during training (else its resume proves nothing)
        assert not torch.equal(straight[key], initial[key.removeprefix("head.")]), key
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_elasticface_stream_starts_from_the_run_seed(tmp_path: Path) -> None:
    """The trainer passes seed to the head: same seed, same stream; another seed or head.kwargs.seed differs."""
    def state(*extra: str) -> torch.Tensor:
        head = Trainer(tiny_config(tmp_path, "head.kind=elasticface", *extra)).head
        return head.seed, head.generator_state

    (seed_a, a), (_, again), (seed_b, b) = state("seed=4"), state("seed=4"), state("seed=5")
    assert (seed_a, seed_b) == (4, 5) and torch.equal(a, again) and not torch.equal(a, b)
    own, stream = state("seed=4", "head.kwargs={seed: 5}")
    assert own == 5 and torch.equal(stream, b)
