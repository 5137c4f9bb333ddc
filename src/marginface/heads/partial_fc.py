"""Partial FC class sampling: every positive class of the batch plus uniformly drawn negatives.

Written against local class rows so that a model-parallel shard samples its own rows the same way:
labels that another shard owns arrive as −1 and stay −1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
