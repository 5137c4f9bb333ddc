"""Plain autograd building blocks: cosine logits and the margin applied to the target column.

The fused loss in fused.py is the fast path; these are used for inspection (`head.logits`) and by the
variants whose class score is not a single cosine (sub-centres).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from marginface.heads.margin import Margin


def cosine_logits(embeddings: Tensor, weight: Tensor) -> Tensor:
    """(B, C) cosines between L2-normalised embeddings (B, D) and class centres (C, D), in float32+."""
    dtype = torch.float64 if torch.float64 in (embeddings.dtype, weight.dtype) else torch.float32
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        x = F.normalize(embeddings.to(dtype), dim=1)
        w = F.normalize(weight.to(dtype), dim=1)
        return x @ w.t()


def apply_margin(
    cos: Tensor, labels: Tensor, margin: Margin, scale: float, detach_margin: bool = False
) -> Tensor:
    """Scaled logits s·cos with the true class replaced by s·(ψ(m1·θ + m2) − m3)."""
    rows = torch.arange(cos.shape[0], device=cos.device)
    cos_t = cos[rows, labels]
    target = margin.target_logit(cos_t).to(cos.dtype)
    if detach_margin:
        target = cos_t + (target - cos_t).detach()
    logits = cos.index_put((rows, labels), target)
    return logits * scale
