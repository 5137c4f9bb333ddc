"""Plain autograd building blocks: cosine logits and the margin applied to the target column.

The fused loss in fused.py is the fast path; these are used for inspection (`head.logits`) and by the
variants whose class score is not a single cosine (sub-centres).
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginface.heads.margin import Margin
from marginface.precision import compute_dtype

NORM_EPS = 1e-12  # norms are clamped to at least this (F.normalize's eps)


def unit_rows_and_norms(x: Tensor) -> tuple[Tensor, Tensor]:
    """(rows of `x` scaled to unit L2 norm, the norms clamped to ≥ 1e-12): F.normalize, keeping the norms."""
    norm = torch.linalg.vector_norm(x, dim=1).clamp_min(NORM_EPS)
    return x / norm.unsqueeze(1), norm


def cosine_logits(embeddings: Tensor, weight: Tensor) -> Tensor:
    """(B, C) cosines between L2-normalised embeddings (B, D) and class centres (C, D), in float32+."""
    dtype = compute_dtype(embeddings, weight)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        x, _ = unit_rows_and_norms(embeddings.to(dtype))
        w, _ = unit_rows_and_norms(weight.to(dtype))
        return x @ w.t()


def apply_margin(
    cos: Tensor, labels: Tensor, margin: Margin, scale: float, detach_margin: bool = False, *,
    m2: Tensor | None = None, m3: Tensor | None = None, curriculum_t: Tensor | None = None,
) -> Tensor:
    """Scaled logits s·cos with the true class replaced by s·(ψ(m1·θ + m2) − m3); `m2`, `m3` per row, and
    CurricularFace's negatives c·(t + c) where c exceeds the row's target logit, as in the fused loss."""
    rows = torch.arange(cos.shape[0], device=cos.device)
    cos_t = cos[rows, labels]
    target = margin.target_logit(cos_t, m2, m3).to(cos.dtype)
    if detach_margin:
        target = cos_t + (target - cos_t).detach()
    if curriculum_t is not None:
        hard = cos > target.detach().unsqueeze(1)
        cos = torch.where(hard, cos * (curriculum_t.detach() + cos), cos)
    logits = cos.index_put((rows, labels), target)
    return logits * scale
