"""A tiny, fast training configuration for tests."""

from __future__ import annotations

from pathlib import Path

from marginface.train.config import TrainConfig, load_config

# The backbone works at 28x28 (input_pool 4; the 112x112 contract stays): the trainer's logic is what these
# tests check, and a step costs about a sixteenth of the full-resolution one.
TINY = [
    "data.kind=synthetic", "data.synthetic_identities=6", "data.synthetic_samples=6", "data.batch_size=8",
    "data.workers=0", "model.backbone=mbf", "model.num_features=16",
    "model.kwargs={scale: 1, blocks: [1, 1, 1, 1], input_pool: 4}",
    "head.s=16.0", "optim.lr=0.05", "optim.max_steps=6", "log_every=1", "checkpoint_every=2", "export_onnx=false",
    "eval.synthetic=false", "keep_checkpoints=10",
]


def tiny_config(run_dir: Path, *extra: str) -> TrainConfig:
    """A config that trains a very small MobileFaceNet on 36 synthetic faces in seconds."""
    return load_config(None, [*TINY, f"output_dir={run_dir}", *extra])
