"""Saved models: the safetensors + model.json round trip gives the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from marginface.backbones import load, save


def test_save_load_round_trip(tmp_path: Path, trained_like_mbf: torch.nn.Module) -> None:
    save(trained_like_mbf, "mbf", tmp_path / "model")
    config = json.loads((tmp_path / "model" / "model.json").read_text())
    assert config["architecture"] == "mbf" and config["num_features"] == 128 and config["input"]["size"] == 112
    loaded = load(tmp_path / "model")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained_like_mbf(x))
