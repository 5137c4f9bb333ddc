"""Small on-disk fixtures: identity folders of synthetic faces written to tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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


def write_raw_pack(out: Path, labels: list[float], ranges: tuple[float, float] | None = None,
                   classes: int | None = None, images: list[bytes] | None = None,
                   property_text: str | bytes | None = None) -> Path:
    """An insightface-layout pack written record by record, so that any label, record-0 range or `property`
    content can be fed to the reader: images are keys 1..N (labels as given, flag 0), identity records follow,
    record 0 announces `ranges` (default: the true [N + 1, N + 1 + classes))."""
    import numpy as np

    from marginface.data.image import encode_image
    from marginface.data.recordio import IRHeader, RecordIOWriter, pack_record

    out.mkdir(parents=True, exist_ok=True)
    count = len(labels)
    classes = classes if classes is not None else max(int(v) for v in labels if v == v) + 1
    payloads = images or [encode_image(synthetic_face(7, int(v) if v == v else 0, i), ".png")
                          for i, v in enumerate(labels)]
    first = count + 1
    announced = ranges if ranges is not None else (first, first + classes)
    with RecordIOWriter(out / "train.rec") as writer:
        writer.write(0, pack_record(IRHeader(2, np.array(announced, dtype=np.float32), 0, 0), b""))
        for key, (label, payload) in enumerate(zip(labels, payloads, strict=True), start=1):
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), payload))
        for klass in range(classes):
            keys = [k for k, v in enumerate(labels, start=1) if v == v and int(v) == klass]
            span = (min(keys), max(keys) + 1) if keys else (0, 0)
            writer.write(first + klass, pack_record(IRHeader(2, np.array(span, dtype=np.float32), 0, 0), b""))
    prop = property_text if property_text is not None else f"{classes},112,112\n"
    (out / "property").write_bytes(prop if isinstance(prop, bytes) else prop.encode())
    return out


@contextmanager
def tmpfs(target: Path, size: int, read_only: bool = False, prepare: tuple[str, ...] = ()) -> Iterator[Path | None]:
    """A tmpfs of `size` bytes at `target` (folders `prepare` made first, then remounted read-only when asked);
    yields None when mounting is not allowed here."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={max(size // 1024, 4)}k", "tmpfs", str(target)],
                          capture_output=True) if os.geteuid() == 0 else None
    if done is None or done.returncode:
        yield None
        return
    try:
        for name in prepare:
            (target / name).mkdir(parents=True)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        yield target
    finally:
        if subprocess.run(["umount", str(target)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(target)], check=False)  # still busy: detach it anyway
