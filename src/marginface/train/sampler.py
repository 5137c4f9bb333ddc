"""A resumable, world-size-independent sampler: one global permutation per epoch, consumed in global
batches; each process takes its contiguous slice of every global batch.

Its position is (epoch, global batches consumed), so a run resumes mid-epoch exactly, on any number of
processes, as long as the global batch size is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from marginface.errors import UsageError
from marginface.partition import even_share
from marginface.seeding import permutation_seed


class ResumableSampler(Sampler[int]):
    """Yields this rank's indices for the rest of the current epoch (complete global batches only)."""

    def __init__(self, dataset_size: int, global_batch: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if dataset_size < global_batch:
            raise UsageError(f"dataset has {dataset_size} samples, fewer than one global batch of {global_batch}")
        self.dataset_size = dataset_size
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.batches_done = 0  # global batches of this epoch already consumed (set on resume)

    @property
    def batches_per_epoch(self) -> int:
        """Complete global batches in one epoch."""
        return self.dataset_size // self.global_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's global order (a pure function of seed and epoch)."""
        generator = torch.Generator().manual_seed(permutation_seed(self.seed, epoch))
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self.permutation(self.epoch)
        start, stop = even_share(self.global_batch, self.rank, self.world_size)
        for batch in range(self.batches_done, self.batches_per_epoch):
            offset = batch * self.global_batch
            yield from order[offset + start:offset + stop].tolist()

    def __len__(self) -> int:
        start, stop = even_share(self.global_batch, self.rank, self.world_size)
        return (self.batches_per_epoch - self.batches_done) * (stop - start)

    def state_dict(self) -> dict:
        """Position: epoch and global batches consumed."""
        return {"epoch": self.epoch, "batches_done": self.batches_done, "seed": self.seed,
                "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by state_dict (the global batch must match)."""
        if int(state["global_batch"]) != self.global_batch:
            raise UsageError(f"checkpoint was taken with global batch {state['global_batch']}, "
                             f"this run uses {self.global_batch}: the data position cannot be restored")
        self.epoch, self.batches_done, self.seed = int(state["epoch"]), int(state["batches_done"]), int(state["seed"])
