"""What every backbone is: (B, 3, 112, 112) float in [−1, 1] → (B, num_features), with switchable
gradient checkpointing. `Backbone` states the contract (save/export rely on it); `GradCheckpointing` is the
one implementation of checkpointing both architectures share."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@runtime_checkable
class Backbone(Protocol):
    """A face-embedding network: called on (B, 3, 112, 112) it returns (B, num_features)."""

    num_features: int

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass instead of storing them (training memory ↓, time ↑)."""

    def __call__(self, x: Tensor) -> Tensor: ...


def missing_backbone_members(model: object) -> list[str]:
    """The members of the Backbone contract that `model` lacks (empty when it satisfies it)."""
    missing = [name for name in ("num_features", "set_grad_checkpointing") if not hasattr(model, name)]
    if "num_features" not in missing and not isinstance(model.num_features, numbers.Integral):  # type: ignore[attr-defined]
        missing.append("num_features as an int")
    return missing


class GradCheckpointing(nn.Module):
    """Base of the backbones: `set_grad_checkpointing` and `run_layers`, which checkpoints each layer while
    training with gradients enabled (layers whose input needs no gradient run plainly: nothing to save)."""

    gradient_checkpointing: bool = False

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Switch per-layer activation checkpointing on or off (it only acts in training mode)."""
        self.gradient_checkpointing = bool(enabled)

    def run_layers(self, layers: Iterable[nn.Module], x: Tensor) -> Tensor:
        """Apply `layers` in order, each checkpointed when checkpointing is on and it can help."""
        use = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if not use and isinstance(layers, nn.Sequential):  # called as a whole, so hooks on it still fire
            return layers(x)
        for layer in layers:
            x = checkpoint(layer, x, use_reentrant=False) if use and x.requires_grad else layer(x)
        return x
