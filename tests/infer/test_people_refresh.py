"""A People change refreshes only the templates it wrote: after every kind of change, what the open gallery
searches, lists and reports is what a fresh Gallery.open of the same file gives."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from marginface.infer.gallery import Gallery, GalleryDamaged
from marginface.infer.people import People
from marginface.infer.thresholds import Threshold

from .conftest import FP
from .test_people import _face, add_people, person_vector, run_clustering


def _outcome(gallery: Gallery, queries: np.ndarray) -> dict:
    """Everything a reader sees of the index: search answers (or the refusal), templates, identities."""
    try:
        answers = [[(m.name, m.score) for m in row] for row in gallery.search(queries, k=6)]
        ids, owners, vectors, names = gallery.verified_templates()
        templates = (ids.tolist(), owners.tolist(), vectors.tobytes(), names)
    except GalleryDamaged as err:
        answers, templates = str(err), None
    return {"answers": answers, "templates": templates, "stats": gallery.stats()["templates"],
            "identities": [(i.name, i.templates) for i in gallery.identities()], "length": len(gallery)}


def _assert_as_fresh(gallery: Gallery, queries: np.ndarray) -> None:
    with Gallery.open(gallery.path, index=gallery.index_kind) as fresh:
        assert _outcome(gallery, queries) == _outcome(fresh, queries)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_every_people_change_leaves_the_index_as_a_full_reload_would(tmp_path, kind: str) -> None:
    if kind != "exact":
        pytest.importorskip("faiss")  # approximate kinds are rebuilt whole; this checks they still are
    gallery = Gallery.create(tmp_path / "g.db", FP, Threshold.fixed(0.5), model=tmp_path / "m.onnx",
                             detector=None, index=kind)
    people = People(gallery)
    rng = np.random.default_rng(3)
    faces = add_people(people, 4, 16, rng)
    queries = np.stack([_face(person_vector(p % 4, rng)).embedding for p in range(12)]
                       + [_face(rng.normal(size=8)).embedding for _ in range(4)])
    gallery.enroll("dan", [(_face(person_vector(3, rng)), "enrolled-1"), (_face(person_vector(3, rng)), "e-2")], FP)

    def cluster_of(person: int) -> str:
        return people.faces([faces[person][0]])[0].person.ref

    steps = [
        lambda: run_clustering(people),
        lambda: people.name(cluster_of(0), "ann"),
        lambda: people.name(cluster_of(1), "bob"),
        lambda: people.name("ann", "anna"),  # a rename: no template written
        lambda: people.name(cluster_of(3), "dan"),  # into an enrolled person: a merge
        lambda: people.split(faces[0][:2]),
        lambda: people.split(faces[0][2:3], into="bob"),
        lambda: people.not_this_person(faces[1][:1], "bob"),
        lambda: people.merge("anna", cluster_of(0) if cluster_of(0) != "anna" else "bob"),
        lambda: people.merge(cluster_of(2), "dan"),
        lambda: people.drop_faces(faces[1][1:2]),
        lambda: run_clustering(people),
        lambda: people.remove("bob"),
    ]
    for step in steps:
        step()
        _assert_as_fresh(gallery, queries)
    # a damaged template (written by another process) keeps being reported under its person's new name
    db = sqlite3.connect(gallery.path, isolation_level=None)
    db.execute("UPDATE templates SET embedding = zeroblob(32) WHERE id = (SELECT MIN(t.id) FROM templates t JOIN "
               "identities i ON i.id = t.identity_id WHERE i.name = 'dan')")
    db.close()
    with pytest.raises(GalleryDamaged, match="of 'dan'"):
        gallery.search(queries)
    people.name("dan", "daniel")
    _assert_as_fresh(gallery, queries)
    with pytest.raises(GalleryDamaged, match="of 'daniel'"):
        gallery.search(queries)
    people.remove("daniel")
    _assert_as_fresh(gallery, queries)
    assert gallery.search(queries)[0]  # searchable again
    gallery.close()
