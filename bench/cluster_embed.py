"""Embedding caches for bench/cluster.py: our FaceRecognizer's main face per photo, and face_recognition's.

    python bench/cluster_embed.py ours lfw      # -> runs/cluster/ours_lfw.npz
    python bench/cluster_embed.py peer orl      # -> runs/cluster/peer_orl.npz (face_recognition, benchmark only)

Each cache holds `embeddings` (N, D) float32 (a zero row where no face was found), `found` (N,) bool,
`labels` (N,) int64 identity of each photo, `names` and `paths`, in the sorted order of the identity folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

from marginface.data.folder import scan_identity_folder

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "runs" / "cluster"
log = logging.getLogger("bench.cluster_embed")


def data_dir() -> Path:
    """../shared/data or $MARGINFACE_DATA."""
    return Path(os.environ.get("MARGINFACE_DATA", REPO.parent / "shared" / "data")).resolve()


def dataset_root(name: str) -> Path:
    """The identity folder of 'lfw' or 'orl'."""
    data = data_dir()
    return {"lfw": data / "lfw" / "lfw-deepfunneled", "orl": data / "orl_att_faces" / "att_faces"}[name]


def cache_path(kind: str, name: str) -> Path:
    """runs/cluster/<kind>_<dataset>.npz."""
    return CACHE / f"{kind}_{name}.npz"


def _save(path: Path, embeddings: np.ndarray, found: np.ndarray, items: list, names: list[str],
          done: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, embeddings=embeddings.astype(np.float32), found=found,
             labels=np.array([label for _, label in items], np.int64), names=np.array(names),
             paths=np.array([str(p) for p, _ in items]),
             done=np.ones(len(items), bool) if done is None else done)
    os.replace(tmp, path)


def embed_ours(name: str) -> Path:
    """Our FaceRecognizer.scan (YuNet, main face, flip test) over the dataset; main face per photo."""
    from marginface.infer.recognizer import FaceRecognizer

    data = data_dir()
    names, items = scan_identity_folder(dataset_root(name))
    recognizer = FaceRecognizer(data / "face_recognition_mobilefacenet" / "mobilefacenet_dynamic_batch.onnx",
                                data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx")
    row = {str(p): i for i, (p, _) in enumerate(items)}
    out = np.zeros((len(items), recognizer.fingerprint.embedding_dim), np.float32)
    found = np.zeros(len(items), bool)
    start = time.perf_counter()
    for done, (path, faces) in enumerate(recognizer.scan([p for p, _ in items]), 1):
        if isinstance(faces, list) and faces:
            out[row[str(path)]], found[row[str(path)]] = faces[0].embedding, True
        if done % 500 == 0:
            log.info("ours %s: %d/%d photos, %.1f photos/s", name, done, len(items),
                     done / (time.perf_counter() - start))
    path = cache_path("ours", name)
    _save(path, out, found, items, names)
    return path


def import_face_recognition():
    """face_recognition, with a stand-in for the pkg_resources its model package still imports (removed
    from recent setuptools)."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda pkg, rel: str(Path(__import__(pkg).__file__).parent / rel)
            sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def embed_peer(name: str) -> Path:
    """face_recognition as its README does it: HOG face_locations, then face_encodings of the largest face.
    Photos of people with >= 10 photos go first and the cache is saved every 500 photos (`done` marks the
    photos embedded so far), so a partial run still serves the >= 10 subset."""
    fr = import_face_recognition()
    names, items = scan_identity_folder(dataset_root(name))
    labels = np.array([label for _, label in items])
    many = np.bincount(labels)[labels] >= 10
    order = np.concatenate([np.flatnonzero(many), np.flatnonzero(~many)])
    out = np.zeros((len(items), 128), np.float32)
    found = np.zeros(len(items), bool)
    done = np.zeros(len(items), bool)
    path = cache_path("peer", name)
    start = time.perf_counter()
    for count, i in enumerate(order.tolist(), 1):
        image = fr.load_image_file(str(items[i][0]))
        boxes = fr.face_locations(image)
        if boxes:
            main = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))  # (top, right, bottom, left)
            out[i], found[i] = fr.face_encodings(image, [main])[0], True
        done[i] = True
        if count % 500 == 0 or count == len(order):
            _save(path, out, found, items, names, done=done)
            log.info("peer %s: %d/%d photos, %.2f photos/s", name, count, len(items),
                     count / (time.perf_counter() - start))
    return path


def main() -> None:
    """Command line: which embedder, which dataset."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["ours", "peer"])
    parser.add_argument("dataset", choices=["lfw", "orl"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    path = (embed_ours if args.kind == "ours" else embed_peer)(args.dataset)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
