"""Evenly spread starting class centres: an alternative to the N(0, 0.01²) start for low-dimensional features.

In 2-D, a normalised head started from tiny random centres collapses them onto one direction within a few
steps (docs/paper.md §2); unit centres spread evenly from the start avoid that, for every head alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def spread_centres(num_classes: int, dim: int) -> Tensor:
    """(num_classes, dim) unit rows as far apart as a simple rule allows.

    2-D: class c at angle c·360°/C. dim ≥ C: the first C standard basis vectors (mutually orthogonal).
    Other shapes have no such rule and are refused.
    """
    if num_classes < 1:
        raise ValueError(f"spread centres need at least one class, got {num_classes}")
    if dim == 2:
        angles = torch.arange(num_classes, dtype=torch.float32) * (2 * math.pi / num_classes)
        return torch.stack([angles.cos(), angles.sin()], 1)
    if dim >= num_classes:
        return torch.eye(num_classes, dim)
    raise ValueError(f"head.init 'spread' needs 2-D features or at least as many feature dimensions as classes; "
                     f"got {dim} dimensions for {num_classes} classes")
