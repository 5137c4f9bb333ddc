"""ONNX export: the exported model matches PyTorch, also through the embedders with flip averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from marginface.infer.embedder import OnnxEmbedder, TorchEmbedder, flip_embed
from marginface.infer.export import export_onnx, max_abs_difference


def test_onnx_matches_pytorch(tmp_path: Path, trained_like_mbf: torch.nn.Module) -> None:
    path = export_onnx(trained_like_mbf, tmp_path / "m.onnx")
    assert max_abs_difference(trained_like_mbf, path) <= 1e-4
    faces = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    ours = flip_embed(TorchEmbedder(trained_like_mbf), faces)
    theirs = flip_embed(OnnxEmbedder(path), faces)
    np.testing.assert_allclose(theirs, ours, atol=2e-4)
