"""Training: configuration, the loop, checkpoints, schedules, optimisers and distributed helpers."""
