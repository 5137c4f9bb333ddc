"""The public surface: main entry points importable from `marginface`, lazily; typed (py.typed shipped)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import marginface

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, module", [
    ("FaceRecognizer", "marginface.infer.recognizer"), ("Gallery", "marginface.infer.gallery"),
    ("Threshold", "marginface.infer.thresholds"), ("get_backbone", "marginface.backbones"),
    ("import_onnx", "marginface.backbones"), ("get_head", "marginface.heads"),
    ("Trainer", "marginface.train.trainer"), ("load_config", "marginface.train.config"),
    ("MarginfaceError", "marginface.errors"),
])
def test_each_entry_point_is_the_librarys_own_object(name: str, module: str) -> None:
    assert getattr(marginface, name) is getattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name)
    assert name in marginface.__all__ and name in dir(marginface)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        marginface.Nope  # noqa: B018


def test_importing_the_package_loads_no_heavy_library() -> None:
    code = ("import sys, marginface; marginface.__version__; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cv2', 'numpy', 'onnxruntime')); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={"PYTHONPATH": str(ROOT / "src")})


def test_the_package_is_marked_typed_and_ships_the_marker() -> None:
    assert (ROOT / "src" / "marginface" / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["marginface"]


def test_all_lists_exactly_the_entry_points() -> None:
    assert sorted(marginface.__all__) == sorted(["__version__", *marginface._EXPORTS])
