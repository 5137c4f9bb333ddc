"""Learning-rate schedule stepped per iteration: linear warm-up, then polynomial decay to zero."""

from __future__ import annotations

from marginface.errors import UsageError


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, power: float = 2.0) -> float:
    """Multiplier of the base lr at `step` (0-based): step/warmup during warm-up, then (1 − progress)^power."""
    if total_steps < 1:
        raise UsageError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return (1.0 - progress) ** power


class PolySchedule:
    """Sets every param group's lr from the base lrs for a given step; its state is just the step."""

    def __init__(self, optimizer, total_steps: int, warmup_steps: int = 0, power: float = 2.0) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.power = power
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.step_count = 0
        self.apply()

    def apply(self) -> None:
        """Write the lr for the current step into the optimizer."""
        factor = lr_factor(self.step_count, self.total_steps, self.warmup_steps, self.power)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step(self) -> None:
        """Advance one iteration."""
        self.step_count += 1
        self.apply()

    @property
    def lr(self) -> float:
        """Current lr of the first param group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        """Resumable state."""
        return {"step_count": self.step_count, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""
        self.step_count = int(state["step_count"])
        self.base_lrs = list(state["base_lrs"])
        self.apply()
