"""Optimisers that understand Partial FC's sparse row gradients."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from marginface.errors import UsageError


class SparseRowSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay (as torch.optim.SGD, dampening 0) that also accepts sparse
    row gradients: such a parameter changes only in the rows the gradient names; every other row keeps its
    value and its momentum (no weight decay, no momentum drift for class centres a step did not sample)."""

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict], lr: float, momentum: float = 0.9,
        weight_decay: float = 5e-4, nesterov: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise UsageError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and momentum == 0:
            raise UsageError("nesterov needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay, nesterov = group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                rows = None
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows = grad.indices()[0]
                    grad = grad.values()
                current = param if rows is None else param[rows]
                step = grad.add(current, alpha=decay) if decay else grad.clone()
                if momentum:
                    state = self.state[param]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(param)
                    buf = state["momentum_buffer"]
                    if rows is None:
                        buf.mul_(momentum).add_(step)
                        velocity = buf
                    else:
                        velocity = buf[rows].mul_(momentum).add_(step)
                        buf[rows] = velocity
                    step = step.add(velocity, alpha=momentum) if nesterov else velocity
                if rows is None:
                    param.add_(step, alpha=-lr)
                else:
                    param.index_add_(0, rows, step, alpha=-lr)
        return loss
