"""The sampler's resumable, world-size-independent order."""

from __future__ import annotations

import pytest

from marginface.partition import even_share
from marginface.train.sampler import ResumableSampler


def test_ranks_partition_the_global_batch() -> None:
    single = list(ResumableSampler(40, 8, seed=3))
    parts = [list(ResumableSampler(40, 8, seed=3, rank=r, world_size=2)) for r in range(2)]
    rebuilt = []
    for batch in range(5):
        for rank in range(2):
            start, stop = even_share(8, rank, 2)
            rebuilt += parts[rank][batch * (stop - start):(batch + 1) * (stop - start)]
    assert rebuilt == single


def test_resume_mid_epoch() -> None:
    full = list(ResumableSampler(50, 8, seed=1))
    resumed = ResumableSampler(50, 8, seed=1)
    resumed.load_state_dict({"epoch": 0, "batches_done": 3, "seed": 1, "global_batch": 8})
    assert list(resumed) == full[24:48] and len(resumed) == 24
    with pytest.raises(ValueError, match="global batch 16"):
        resumed.load_state_dict({"epoch": 0, "batches_done": 3, "seed": 1, "global_batch": 16})


def test_epochs_differ_and_dataset_too_small() -> None:
    sampler = ResumableSampler(32, 8)
    first = list(sampler)
    sampler.epoch = 1
    assert list(sampler) != first and sorted(first) == sorted(sampler)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableSampler(4, 8)
