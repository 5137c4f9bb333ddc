"""A gallery searched through the index kind it was opened with answers as the exact one, stays current with
changes, and satisfies the storage protocol (infer/storage.py) a server database would implement."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from marginface.infer.faces import FaceResult, ModelFingerprint
from marginface.infer.gallery import Gallery, GalleryError
from marginface.infer.search import unit_rows
from marginface.infer.storage import GalleryStore
from marginface.infer.thresholds import Threshold

DIM = 32
FP = ModelFingerprint("ab" * 32, 112, "NCHW", "RGB", 127.5, 127.5, DIM)


def _face(vector: np.ndarray) -> FaceResult:
    return FaceResult((0.0, 0.0, 10.0, 10.0), np.zeros((5, 2)), 0.9, unit_rows(vector[None])[0], 20.0, 10.0)


@pytest.fixture()
def path(tmp_path: Path) -> Path:
    """A gallery of 200 people with three noisy templates each around their own random centre."""
    rng = np.random.default_rng(0)
    with Gallery.create(tmp_path / "g.db", FP, Threshold.fixed(0.5), model=tmp_path / "m.onnx", detector=None) as g:
        for person in range(200):
            centre = rng.normal(size=DIM).astype(np.float32)
            g.enrol(f"p{person}", [(_face(centre + 0.2 * rng.normal(size=DIM).astype(np.float32)), f"{person}-{i}")
                                   for i in range(3)], FP)
    return tmp_path / "g.db"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_an_approximate_index_answers_as_the_exact_gallery_and_follows_changes(path: Path, kind: str) -> None:
    rng = np.random.default_rng(1)
    queries = unit_rows(rng.normal(size=(50, DIM)).astype(np.float32))
    with Gallery.open(path) as exact, Gallery.open(path, index=kind) as approximate:
        assert approximate.stats()["index"] == kind and exact.stats()["index"] == "exact"
        want = [[(m.name, round(m.score, 5)) for m in row] for row in exact.search(queries, k=3)]
        got = [[(m.name, round(m.score, 5)) for m in row] for row in approximate.search(queries, k=3)]
        agree = np.mean([w[0] == g[0] for w, g in zip(want, got, strict=True)])
        assert agree >= 0.95, (agree, want[:3], got[:3])  # same best identity (and score) almost always
        newcomer = rng.normal(size=DIM).astype(np.float32)
        approximate.enrol("newcomer", [(_face(newcomer), "new")], FP)
        assert approximate.search(unit_rows(newcomer[None]), k=1)[0][0].name == "newcomer"
        approximate.remove("p0")
        ids, owners, vectors, names = approximate.verified_templates()
        assert len(ids) == 200 * 3 - 3 + 1 and vectors.shape == (len(ids), DIM) and "p0" not in names.values()
        exact_ids = exact.verified_templates()[0]  # the exact gallery sees the other connection's changes too
        assert sorted(exact_ids.tolist()) == sorted(ids.tolist())


def test_an_unknown_index_kind_names_the_choices(path: Path) -> None:
    with pytest.raises(GalleryError, match="unknown index kind 'annoy'; expected one of exact, hnsw, ivf"):
        Gallery.open(path, index="annoy")


def test_the_gallery_implements_the_storage_protocol(path: Path) -> None:
    with Gallery.open(path) as gallery:
        assert isinstance(gallery, GalleryStore)
    members = {name for name, _ in inspect.getmembers(GalleryStore, inspect.isfunction) if not name.startswith("_")}
    assert {"search", "enroll", "identities", "verified_templates", "write_problem"} <= members
    for name in members:  # same parameters, so code written against the protocol runs on the gallery
        expected = list(inspect.signature(getattr(GalleryStore, name)).parameters)
        assert list(inspect.signature(getattr(Gallery, name)).parameters) == expected, name
