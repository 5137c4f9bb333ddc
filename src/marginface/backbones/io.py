"""The exported model format: weights as safetensors + a small JSON saying how to rebuild and feed it;
`load_weights` also reads arcface_torch's torch checkpoints (backbone.pth, model.pt) to initialise from.

    model.safetensors   the backbone's state_dict
    model.json          {"architecture": "mbf", "num_features": 512, "kwargs": {...},
                         "input": {"size": 112, "channel_order": "RGB", "mean": 127.5, "std": 127.5}}
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from marginface.backbones.contract import missing_backbone_members
from marginface.backbones.registry import get_backbone
from marginface.fileio import save_safetensors

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "model.json"
INPUT_SPEC = {"size": 112, "channel_order": "RGB", "layout": "NCHW", "mean": 127.5, "std": 127.5}


def save(model: nn.Module, architecture: str, out_dir: str | Path, **kwargs) -> Path:
    """Write model.safetensors + model.json into out_dir (atomically: temporary names, then rename).

    `model` must satisfy the Backbone contract (marginface.backbones.contract): its num_features is what
    model.json records, so a model without one is refused rather than described with a guessed size.
    """
    missing = missing_backbone_members(model)
    if missing:
        raise TypeError(f"cannot save {type(model).__name__} as a {architecture!r} backbone: it lacks "
                        f"{', '.join(missing)} (the Backbone contract in marginface.backbones.contract)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    config = {"architecture": architecture, "num_features": int(model.num_features),
              "kwargs": kwargs, "input": INPUT_SPEC}
    tmp_weights, tmp_config = out / (WEIGHTS_NAME + ".tmp"), out / (CONFIG_NAME + ".tmp")
    save_safetensors(state, tmp_weights)  # the umask's mode, like model.json and model.onnx
    tmp_config.write_text(json.dumps(config, indent=2) + "\n")
    tmp_weights.replace(out / WEIGHTS_NAME)
    tmp_config.replace(out / CONFIG_NAME)
    return out


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported backbone (a directory, or its model.json / model.safetensors path), in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run or exported-model folder)")
    folder = path if path.is_dir() else path.parent
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{folder}: an exported model needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = json.loads(config_path.read_text())
        architecture = config["architecture"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{config_path}: not a marginface model description ({err})") from err
    model = get_backbone(architecture, num_features=int(config.get("num_features", 512)), **config.get("kwargs", {}))
    model.load_state_dict(load_file(str(weights_path), device=str(map_location)), strict=True)
    return model.eval()


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A backbone state_dict from an exported model directory / safetensors file, or a torch .pth / .pt
    (arcface_torch's backbone.pth or model.pt, possibly wrapped in {'state_dict': ...})."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(state).__name__}")
    return {name.removeprefix("module."): value for name, value in state.items()}
