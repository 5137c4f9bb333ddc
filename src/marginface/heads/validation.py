"""Input checks shared by every head: errors name the offending index and value."""

from __future__ import annotations

import torch
from torch import Tensor


def check_embeddings(embeddings: Tensor, embedding_dim: int) -> None:
    """Raise ValueError unless `embeddings` is a finite (B, embedding_dim) floating tensor."""
    if embeddings.dim() != 2 or embeddings.shape[1] != embedding_dim:
        raise ValueError(
            f"embeddings must have shape (batch, {embedding_dim}), got {tuple(embeddings.shape)}"
        )
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be a floating tensor, got {embeddings.dtype}")
    finite = torch.isfinite(embeddings)
    if not bool(finite.all()):
        row, col = (int(v) for v in torch.nonzero(~finite)[0])
        raise ValueError(f"embeddings[{row}, {col}] is {embeddings[row, col].item()} (NaN/Inf input)")


def check_labels(labels: Tensor, batch_size: int, num_classes: int) -> None:
    """Raise ValueError unless `labels` is an integer (B,) tensor with values in [0, num_classes)."""
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"labels[{index}] = {int(labels[index])} is outside [0, {num_classes}) (num_classes={num_classes})"
        )
