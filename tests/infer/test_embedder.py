"""ONNX embedders: input specs (BGR order, normalisation), wrong sizes and input names refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from marginface.infer.embedder import OnnxEmbedder, OnnxInputSpec
from marginface.infer.export import export_onnx


def test_onnx_spec_bgr_and_normalisation(tmp_path: Path, trained_like_mbf: torch.nn.Module) -> None:
    path = export_onnx(trained_like_mbf, tmp_path / "m.onnx")
    faces = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    rgb = OnnxEmbedder(path).embed(faces)
    bgr = OnnxEmbedder(path, OnnxInputSpec(channel_order="BGR")).embed(faces[..., ::-1].copy())
    np.testing.assert_allclose(bgr, rgb, atol=1e-5)
    with pytest.raises(ValueError, match="112x112"):
        OnnxEmbedder(path).embed(np.zeros((1, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="no input named 'x'"):
        OnnxEmbedder(path, input_name="x")
