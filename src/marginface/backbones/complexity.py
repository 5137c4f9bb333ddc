"""Parameter and multiply-accumulate counts of a backbone (what papers call "GFLOPs" for these nets)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    """Parameters (millions) and multiply-accumulates per 112×112 image (billions)."""

    params_m: float
    gmacs: float


def measure(model: nn.Module, input_size: int = 112) -> Complexity:
    """Count parameters and MACs of one forward pass on a (1, 3, size, size) input."""
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    model.train(was_training)
    return Complexity(params_m=params / 1e6, gmacs=counter.get_total_flops() / 2 / 1e9)
