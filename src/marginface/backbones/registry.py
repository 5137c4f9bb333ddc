"""Backbone names → constructors, so configs and checkpoints can name an architecture as a string."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from marginface.backbones.iresnet import iresnet
from marginface.backbones.mobilefacenet import mobilefacenet
from marginface.backbones.onnx_import import OnnxBackbone, OnnxImportError


def onnx_graph(num_features: int | None = None, program: dict | None = None, **kwargs) -> OnnxBackbone:
    """An imported ONNX graph rebuilt from its saved description (model.json); new imports use import_onnx."""
    if program is None:
        raise OnnxImportError("the 'onnx' backbone is built from an ONNX file: set model.pretrained to a .onnx "
                              "path (or load a saved model folder, whose model.json holds the graph)")
    return OnnxBackbone(program, num_features, **kwargs)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "r18": partial(iresnet, 18),
    "r34": partial(iresnet, 34),
    "r50": partial(iresnet, 50),
    "r100": partial(iresnet, 100),
    "r200": partial(iresnet, 200),
    "mbf": partial(mobilefacenet, large=False),
    "mbf_large": partial(mobilefacenet, large=True),
}
IMPORTED: dict[str, Callable[..., nn.Module]] = {"onnx": onnx_graph}  # built from a file's graph, not a name
ALIASES = {"iresnet18": "r18", "iresnet34": "r34", "iresnet50": "r50", "iresnet100": "r100",
           "iresnet200": "r200", "mobilefacenet": "mbf"}


def backbone_names() -> list[str]:
    """Canonical names get_backbone builds from the name alone (aliases such as 'iresnet50' also work);
    'onnx' (an imported graph) needs its graph description as well."""
    return sorted(BACKBONES)


def get_backbone(name: str, num_features: int = 512, **kwargs) -> nn.Module:
    """Build a backbone by name, e.g. get_backbone("r50", num_features=512, dropout=0.2)."""
    key = ALIASES.get(name, name)
    if key in IMPORTED:
        return IMPORTED[key](num_features=num_features, **kwargs)
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {backbone_names()}, or 'onnx' with "
                         f"model.pretrained: a .onnx file")
    return BACKBONES[key](num_features=num_features, **kwargs)
