"""House rule: no two modules import each other (at load time or inside a function)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _imports() -> dict[str, set[str]]:
    """Module name -> the marginface modules it imports anywhere in its body."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.with_suffix("").relative_to(SRC).parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("marginface"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names if alias.name.startswith("marginface")}
        found[name] = deps
    return found


def test_no_two_modules_import_each_other() -> None:
    imports = _imports()
    assert "marginface.infer.faces" in imports
    mutual = sorted((a, b) for a, deps in imports.items() for b in deps if a < b and a in imports.get(b, ()))
    assert mutual == []


def test_the_gallery_loads_without_the_recognizer() -> None:
    code = ("import sys, marginface.infer.gallery; "
            "assert 'marginface.infer.recognizer' not in sys.modules, 'gallery imported recognizer'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={"PYTHONPATH": str(SRC)})


def test_the_value_types_are_still_importable_from_the_recognizer() -> None:
    from marginface.infer import faces, recognizer

    for name in ("FaceResult", "ModelFingerprint", "NoFaceError", "Verification"):
        assert getattr(recognizer, name) is getattr(faces, name)
