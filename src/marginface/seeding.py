"""Every seed the library derives, in one place: each random stream is a pure function of the run's seed
and the keys that name the stream (rank, step, epoch, identity, ...), so runs reproduce and resume exactly.

`stream` is the rule for new streams: numpy's SeedSequence mixes the keys (no collisions between nearby
keys, as simple arithmetic has). The named streams below predate it and keep their arithmetic on purpose:
the committed trained models and results (bench/results/paper) were produced with exactly these values.
No dependencies on the rest of marginface.
"""

from __future__ import annotations

import numpy as np

_MIX = 1_000_003  # a prime: seed and the next key land on different seeds for every small key
_EPOCH_MIX = 100_003
_STEP_MIX = 7919
_MAX_SEED = 2**63


def stream(*keys: int) -> np.random.Generator:
    """A numpy generator seeded by SeedSequence over `keys` (each taken modulo 2**32)."""
    return np.random.default_rng(np.random.SeedSequence([key & 0xFFFFFFFF for key in keys]))


def rank_seed(seed: int, rank: int) -> int:
    """torch's global seed on `rank` after model construction (its dropout and Partial FC draws)."""
    return seed + _MIX * rank


def flip_seed(seed: int, step: int, rank: int) -> int:
    """The seed of `rank`'s horizontal-flip mask at optimiser step `step`."""
    return seed * _MIX + step * _STEP_MIX + rank


def permutation_seed(seed: int, epoch: int) -> int:
    """The seed of the global sample order of `epoch`."""
    return seed * _EPOCH_MIX + epoch


def loader_seed(seed: int, epoch: int) -> int:
    """The DataLoader's base seed in `epoch` (its workers' seeds derive from it)."""
    return seed + epoch


def item_seed(seed: int, index: int) -> int:
    """The seed of the `index`-th of several operations sharing one seed (a chain of perturbations)."""
    return (seed * _MIX + index) % _MAX_SEED


AUGMENT_STREAM = 0xA06  # names the augmentation stream among `stream`'s keys


def augment_stream(seed: int, epoch: int, batch: int, rank: int) -> np.random.Generator:
    """The generator of `rank`'s training-time degradations for global batch `batch` of `epoch`."""
    return stream(seed, AUGMENT_STREAM, epoch, batch, rank)


HEAD_STREAM = 0xE1A  # names a head's own random stream among `stream`'s keys


def head_seed(seed: int) -> int:
    """The seed of a head's own torch.Generator (ElasticFace's margin draws): a function of the run's seed
    only, so every rank of a model-parallel group draws the same values."""
    return int(stream(seed, HEAD_STREAM).integers(2**63))
