"""Exported models: safetensors round trip, ONNX parity with PyTorch, ONNX input specs, eval CLI on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from marginface.backbones import get_backbone, load, save
from marginface.cli import main
from marginface.infer.embedder import OnnxEmbedder, OnnxInputSpec, TorchEmbedder, flip_embed
from marginface.infer.export import export_onnx, max_abs_difference


@pytest.fixture(scope="module")
def trained_like_mbf() -> torch.nn.Module:
    torch.manual_seed(0)
    model = get_backbone("mbf", num_features=128)
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 3, 112, 112) * 2 - 1)  # non-trivial BN statistics
    return model.eval()


def test_save_load_round_trip(tmp_path: Path, trained_like_mbf: torch.nn.Module) -> None:
    save(trained_like_mbf, "mbf", tmp_path / "model")
    config = json.loads((tmp_path / "model" / "model.json").read_text())
    assert config["architecture"] == "mbf" and config["num_features"] == 128 and config["input"]["size"] == 112
    loaded = load(tmp_path / "model")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained_like_mbf(x))


def test_onnx_matches_pytorch(tmp_path: Path, trained_like_mbf: torch.nn.Module) -> None:
    path = export_onnx(trained_like_mbf, tmp_path / "m.onnx")
    assert max_abs_difference(trained_like_mbf, path) <= 1e-4
    faces = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    ours = flip_embed(TorchEmbedder(trained_like_mbf), faces)
    theirs = flip_embed(OnnxEmbedder(path), faces)
    np.testing.assert_allclose(theirs, ours, atol=2e-4)


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


def test_cli_eval_exported_model_on_synthetic(tmp_path: Path, trained_like_mbf: torch.nn.Module,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    save(trained_like_mbf, "mbf", tmp_path / "model")
    assert main(["eval", str(tmp_path / "model"), "--synthetic", "--folds", "0,1", "--no-flip",
                 "--out", str(tmp_path / "report")]) == 0
    assert "synthetic" in capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verification"][0]["num_pairs"] == 120
    assert report["options"]["no_flip"] is True


def test_cli_eval_needs_a_set(tmp_path: Path, trained_like_mbf: torch.nn.Module,
                              capsys: pytest.CaptureFixture[str]) -> None:
    save(trained_like_mbf, "mbf", tmp_path / "model")
    assert main(["eval", str(tmp_path / "model")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
