"""Small on-disk fixtures: identity folders of synthetic faces written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2

from marginface.data.synthetic import synthetic_face


def write_identity_folder(root: Path, identities: int = 3, per_identity: int = 4, ext: str = ".png") -> Path:
    """root/<id_k>/<i>.png synthetic 112×112 faces; returns root."""
    for k in range(identities):
        folder = root / f"id_{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_identity):
            rgb = synthetic_face(7, k, i)
            cv2.imwrite(str(folder / f"{i}{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root
