"""What a training run reports while it runs (typed events for progress bars and callers) and at its end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    final_loss: float
    seconds: float
    skipped_steps: int
    skipped_images: int
    verification: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StartEvent:
    """Before the first step: `step` is where a resumed run continues, so a progress bar can begin there."""

    step: int
    total: int


@dataclass(frozen=True)
class StepEvent:
    """Every log_every optimiser steps (and at the last one): the step just finished."""

    step: int
    total: int
    epoch: int
    loss: float
    lr: float
    images_per_s: float
    grad_norm: float


@dataclass(frozen=True)
class EvalEvent:
    """Verification accuracy (mean and std over folds) of one pair set at `step`."""

    step: int
    set_name: str
    accuracy: float
    std: float


@dataclass(frozen=True)
class CheckpointEvent:
    """A checkpoint of `step` was written to `path`."""

    step: int
    path: Path


@dataclass(frozen=True)
class SkipEvent:
    """`images` of the batch at `step` could not be read and were left out."""

    step: int
    images: int


@dataclass(frozen=True)
class NonfiniteEvent:
    """The step was skipped: its embeddings, loss or gradients were not finite (learning rate `lr`)."""

    step: int
    lr: float


@dataclass(frozen=True)
class DoneEvent:
    """The run finished (after the final checkpoint, evaluation and export)."""

    result: TrainResult


TrainEvent = StartEvent | StepEvent | EvalEvent | CheckpointEvent | SkipEvent | NonfiniteEvent | DoneEvent
EventHandler = Callable[[TrainEvent], None]
