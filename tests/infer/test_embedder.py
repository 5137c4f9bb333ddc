"""ONNX embedders: input specs (BGR order, normalisation), wrong sizes and input names refused; the embedders
scan workers get (a one-thread session each, or a shared PyTorch model called one at a time)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from marginface.infer.embedder import OnnxEmbedder, OnnxInputSpec, SerialisedEmbedder, TorchEmbedder, worker_embedder
from marginface.infer.export import export_onnx


@pytest.fixture(scope="module")
def onnx_path(trained_like_mbf: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trained_like_mbf exported once for this module (the export itself is tests/infer/test_export.py's)."""
    return export_onnx(trained_like_mbf, tmp_path_factory.mktemp("onnx") / "m.onnx")


def test_onnx_spec_bgr_and_normalisation(onnx_path: Path) -> None:
    path = onnx_path
    faces = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    rgb = OnnxEmbedder(path).embed(faces)
    bgr = OnnxEmbedder(path, OnnxInputSpec(channel_order="BGR")).embed(faces[..., ::-1].copy())
    np.testing.assert_allclose(bgr, rgb, atol=1e-5)
    with pytest.raises(ValueError, match="112x112"):
        OnnxEmbedder(path).embed(np.zeros((1, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="no input named 'x'"):
        OnnxEmbedder(path, input_name="x")


def test_worker_embedders(onnx_path: Path, trained_like_mbf: torch.nn.Module) -> None:
    path = onnx_path
    shared = OnnxEmbedder(path, OnnxInputSpec(channel_order="BGR"))
    lock = threading.Lock()
    own = worker_embedder(shared, lock)
    assert isinstance(own, OnnxEmbedder) and own.session is not shared.session and own.spec == shared.spec
    assert own.session.get_session_options().intra_op_num_threads == 1  # N workers, N cores, no oversubscription
    faces = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(own.embed(faces), shared.embed(faces), atol=1e-5)

    torch_embedder = TorchEmbedder(trained_like_mbf)
    serialised = worker_embedder(torch_embedder, lock)
    assert isinstance(serialised, SerialisedEmbedder) and serialised.embedder is torch_embedder
    np.testing.assert_array_equal(serialised.embed(faces), torch_embedder.embed(faces))
    with lock:  # the lock is the one every worker shares: held elsewhere, a call waits for it
        waiting = threading.Thread(target=serialised.embed, args=(faces,))
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive()
    waiting.join()
