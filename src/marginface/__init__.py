"""marginface: margin-based softmax face recognition (train, evaluate, deploy).

The main entry points are importable from here and loaded on first use (torch, OpenCV and ONNX Runtime load
only when one is asked for): FaceRecognizer, Gallery, Threshold, get_backbone, import_onnx, get_head,
Trainer, load_config, MarginfaceError.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "FaceRecognizer": "marginface.infer.recognizer",
    "Gallery": "marginface.infer.gallery",
    "Threshold": "marginface.infer.thresholds",
    "get_backbone": "marginface.backbones",
    "import_onnx": "marginface.backbones",
    "get_head": "marginface.heads",
    "Trainer": "marginface.train.trainer",
    "load_config": "marginface.train.config",
    "MarginfaceError": "marginface.errors",
}

__all__ = ["FaceRecognizer", "Gallery", "MarginfaceError", "Threshold", "Trainer", "__version__", "get_backbone",
           "get_head", "import_onnx", "load_config"]  # = __version__ and _EXPORTS (tests/test_public.py)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from marginface.backbones import get_backbone, import_onnx
    from marginface.errors import MarginfaceError
    from marginface.heads import get_head
    from marginface.infer.gallery import Gallery
    from marginface.infer.recognizer import FaceRecognizer
    from marginface.infer.thresholds import Threshold
    from marginface.train.config import load_config
    from marginface.train.trainer import Trainer


def __getattr__(name: str) -> Any:
    """The entry point `name`, imported from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'marginface' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy entry points included."""
    return sorted({*globals(), *_EXPORTS})
