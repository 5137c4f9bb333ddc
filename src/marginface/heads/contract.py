"""What every head is: class centres as the rows of one parameter `weight`, (embeddings, labels) → loss.

`Head` states the contract the trainer, checkpoints, Partial FC and export rely on: the only trainable tensor
is `weight` (it is optimised, gathered across shards and saved in global class order); anything else a
head remembers between steps (an EMA, a random stream) is a registered buffer, saved and restored as is.
"""

from __future__ import annotations

import numbers
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Head(Protocol):
    """A margin-softmax classifier head: called on ((B, D) raw embeddings, (B,) labels) it returns a scalar."""

    embedding_dim: int
    num_classes: int
    weight: Tensor  # (rows, D) class centres (rows = this shard's classes × centres per class)

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor: ...


def missing_head_members(head: object) -> list[str]:
    """What `head` lacks of the Head contract (empty when it satisfies it), in words an error can carry."""
    missing = [name for name in ("embedding_dim", "num_classes", "weight") if not hasattr(head, name)]
    for name in ("embedding_dim", "num_classes"):
        if name not in missing and not isinstance(getattr(head, name), numbers.Integral):
            missing.append(f"{name} as an int")
    if isinstance(head, nn.Module) and "weight" not in missing:
        extra = sorted(name for name, param in head.named_parameters() if param is not head.weight)
        if extra:
            missing.append(f"no parameters besides weight (found {extra}; keep other state in buffers)")
    return missing
