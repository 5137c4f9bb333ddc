"""Partial FC: class rows owned by one process of a model-parallel group, and sampling among them.

Sampling (every positive class of the batch plus uniformly drawn negatives) is written against local
class rows so that a model-parallel shard samples its own rows the same way: labels that another shard
owns arrive as −1 and stay −1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


@dataclass(frozen=True)
class ClassSample:
    """Which rows of the class-centre matrix a step uses, and each sample's target among them."""

    index: Tensor  # (S,) sorted local class rows kept for this step
    target: Tensor  # (B,) position of each sample's class in `index`, −1 if not local


def sampled_count(num_classes: int, sample_rate: float) -> int:
    """Number of class centres a step keeps at `sample_rate` (at least one)."""
    return max(1, int(round(num_classes * sample_rate)))


def sample_classes(
    local_labels: Tensor, num_classes: int, sample_rate: float, generator: torch.Generator | None = None
) -> ClassSample:
    """Keep every positive class in `local_labels` (−1 = not local) plus uniform negatives up to r·C."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    local = local_labels >= 0
    positives = torch.unique(local_labels[local])
    count = max(sampled_count(num_classes, sample_rate), positives.numel())
    if count >= num_classes:
        index = torch.arange(num_classes, device=local_labels.device)
    else:
        scores = torch.rand(num_classes, generator=generator, device=local_labels.device)
        scores[positives] = 2.0  # above every uniform draw: positives always survive top-k
        index = torch.topk(scores, count, sorted=False).indices.sort().values
    target = torch.full_like(local_labels, -1)
    target[local] = torch.searchsorted(index, local_labels[local])
    return ClassSample(index=index, target=target)


def local_targets(labels: Tensor, start: int, stop: int) -> Tensor:
    """Each label as a row of the shard owning classes [start, stop), −1 where another shard owns it."""
    local = labels - start
    local[(local < 0) | (local >= stop - start)] = -1
    return local


def gather_batch(embeddings: Tensor, labels: Tensor, group: dist.ProcessGroup) -> tuple[Tensor, Tensor]:
    """The global batch from every rank's local one; the embeddings' all_gather is autograd-aware (its
    backward sums each rank's partial embedding gradient back to the rank that owns the sample)."""
    with warnings.catch_warnings():  # its replacement in _functional_collectives is still private API
        warnings.simplefilter("ignore", FutureWarning)
        all_embeddings = torch.cat(dist_fn.all_gather(embeddings, group=group))
    gathered = [torch.empty_like(labels) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, labels, group=group)
    return all_embeddings, torch.cat(gathered)
