"""The one compute-precision rule: float64 stays float64 (exact checks), everything else runs in float32.

Heads compute cosines, margins and the softmax in float32 even when autocast hands them 16-bit tensors;
backbones lift 16-bit activations to float32 before the embedding head.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when any input is float64, otherwise float32 (also for float16/bfloat16 inputs)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def full_precision(x: Tensor) -> Tensor:
    """float16/bfloat16 activations as float32; float32/float64 unchanged (the same tensor)."""
    return x.to(compute_dtype(x))
