"""Gallery: SQLite persistence, one transaction per change, exact best-template search, open-set decisions,
model fingerprint checks, and the same numbers as eval's identification protocol."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from marginface.eval.identification import evaluate_identification, split_gallery_probes
from marginface.infer.gallery import Gallery, GalleryError, GalleryModelMismatch, _transaction
from marginface.infer.recognizer import FaceResult, ModelFingerprint
from marginface.infer.search import unit_rows
from marginface.infer.thresholds import Threshold

FP = ModelFingerprint("ab" * 32, 112, "NCHW", "RGB", 127.5, 127.5, 8)
OTHER = ModelFingerprint("cd" * 32, 112, "NCHW", "RGB", 127.5, 127.5, 8)


def _unit(*values: float) -> np.ndarray:
    return unit_rows(np.array(values, np.float32))[0]


def _face(embedding: np.ndarray, score: float = 0.9) -> FaceResult:
    return FaceResult((0.0, 0.0, 10.0, 10.0), np.zeros((5, 2)), score, embedding, 20.0, 10.0)


@pytest.fixture()
def gallery(tmp_path: Path) -> Gallery:
    g = Gallery.create(tmp_path / "g.db", FP, Threshold.fixed(0.5), model=tmp_path / "m.onnx", detector=None)
    yield g
    g.close()


def test_persists_across_reopen_in_wal_mode(tmp_path: Path, gallery: Gallery) -> None:
    gallery.add("ann", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="a1", detection_score=0.9)
    gallery.add("ann", _unit(1, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="a2")
    gallery.add("bob", _unit(0, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="b1")
    gallery.close()
    with Gallery.open(tmp_path / "g.db") as again:
        assert [(i.name, i.templates) for i in again.identities()] == [("ann", 2), ("bob", 1)]
        assert again.fingerprint == FP and again.threshold == Threshold.fixed(0.5)
        assert again.model_path == str((tmp_path / "m.onnx").resolve()) and again.detector_path is None
        assert again.search(_unit(1, 0.1, 0, 0, 0, 0, 0, 0), k=1)[0][0].name == "ann"
        assert again.stats()["templates"] == 3
    db = sqlite3.connect(tmp_path / "g.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = db.execute("SELECT source_sha256, detection_score FROM templates ORDER BY id").fetchone()
    assert row == ("a1", pytest.approx(0.9))


def test_duplicate_source_image_adds_nothing(gallery: Gallery) -> None:
    e = _unit(1, 0, 0, 0, 0, 0, 0, 0)
    assert gallery.add("ann", e, fingerprint=FP, source_sha256="same") is not None
    assert gallery.add("ann", e, fingerprint=FP, source_sha256="same") is None
    assert gallery.enroll("ann", [(_face(e), "same"), (_face(e), "new")], FP) == 1
    assert gallery.identities()[0].templates == 2


def test_search_uses_best_template_per_identity_and_ranks_top_k(gallery: Gallery) -> None:
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None), (_face(_unit(0, 0, 1, 0, 0, 0, 0, 0)), None)],
                   FP)
    gallery.enroll("bob", [(_face(_unit(0.8, 0.6, 0, 0, 0, 0, 0, 0)), None)], FP)
    gallery.enroll("cy", [(_face(_unit(0, 0, 0, 1, 0, 0, 0, 0)), None)], FP)
    query = _unit(0.1, 0.2, 1, 0, 0, 0, 0, 0)
    [matches] = gallery.search(query, k=3)
    assert [m.name for m in matches] == ["ann", "bob", "cy"]  # ann's second template wins, not its first
    expected = float(np.dot(query.astype(np.float64), _unit(0, 0, 1, 0, 0, 0, 0, 0).astype(np.float64)))
    assert matches[0].score == pytest.approx(expected, abs=1e-12)
    assert len(gallery.search(query, k=10)[0]) == 3


def test_open_set_decision_names_the_threshold(gallery: Gallery) -> None:
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None)], FP)
    known, unknown = gallery.identify_faces([_face(_unit(1, 0.2, 0, 0, 0, 0, 0, 0)),
                                             _face(_unit(0, 1, 0, 0, 0, 0, 0, 0))], fingerprint=FP)
    assert known.name == "ann" and known.score >= 0.5
    assert unknown.name is None and unknown.score < 0.5
    payload = unknown.to_dict()
    assert payload["name"] == "unknown" and payload["threshold"] == {"value": 0.5, "source": "fixed"}
    assert payload["candidates"] == [{"name": "ann", "score": unknown.score}] and payload["box"] == [0, 0, 10, 10]


def test_remove_and_rename(gallery: Gallery, tmp_path: Path) -> None:
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None)], FP)
    gallery.enroll("bob", [(_face(_unit(0, 1, 0, 0, 0, 0, 0, 0)), None)], FP)
    gallery.rename("ann", "anne")
    assert gallery.search(_unit(1, 0, 0, 0, 0, 0, 0, 0), k=1)[0][0].name == "anne"
    gallery.remove("bob")
    assert gallery.search(_unit(0, 1, 0, 0, 0, 0, 0, 0), k=5)[0][0].name == "anne"
    with pytest.raises(GalleryError, match="has no identity 'bob'"):
        gallery.remove("bob")
    gallery.enroll("cy", [(_face(_unit(0, 0, 1, 0, 0, 0, 0, 0)), None)], FP)
    with pytest.raises(GalleryError, match="'cy' already exists"):
        gallery.rename("anne", "cy")
    gallery.close()
    with Gallery.open(tmp_path / "g.db") as again:
        assert [i.name for i in again.identities()] == ["anne", "cy"]
        assert again.stats()["templates"] == 2


def test_other_model_is_refused_naming_both(gallery: Gallery) -> None:
    with pytest.raises(GalleryModelMismatch, match=f"sha256={'ab' * 32}.*sha256={'cd' * 32}"):
        gallery.add("ann", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=OTHER)
    with pytest.raises(GalleryModelMismatch):
        gallery.search(_unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=OTHER)
    with pytest.raises(GalleryError, match="must be 8 finite values"):
        gallery.add("ann", np.ones(5, np.float32), fingerprint=FP)
    assert len(gallery) == 0


def test_failed_enrolment_writes_nothing(gallery: Gallery) -> None:
    good, bad = _face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), _face(np.full(8, np.nan, np.float32))
    with pytest.raises(GalleryError):
        gallery.enroll("ann", [(good, "a"), (bad, "b")], FP)
    gallery._db.execute("CREATE TRIGGER fail BEFORE INSERT ON templates WHEN NEW.source_sha256 = 'boom' "
                        "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(GalleryError, match=r"g\.db: cannot write the gallery \(disk full\)"):
        gallery.enroll("ann", [(good, "a"), (good, "boom")], FP)
    assert gallery.identities() == [] and len(gallery) == 0 and gallery.search(good.embedding) == [[]]


def test_create_refuses_existing_file_and_open_refuses_non_galleries(tmp_path: Path, gallery: Gallery) -> None:
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(tmp_path / "g.db", FP, Threshold.fixed(0.5), model="m", detector=None)
    with pytest.raises(GalleryError, match="does not exist"):
        Gallery.open(tmp_path / "none.db")
    with pytest.raises(GalleryError, match="is a folder, not a gallery file"):
        Gallery.open(tmp_path)
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a marginface gallery"):
        Gallery.open(tmp_path / "junk.db")


def test_gallery_decisions_reproduce_eval_identification(tmp_path: Path) -> None:
    """Enrol eval's gallery split, identify its probes one by one: rank-1 and DIR@FPIR equal eval's exactly."""
    rng = np.random.default_rng(3)
    dim, people = 8, 60
    labels = np.repeat(np.arange(people), 5)
    embeddings = (rng.normal(size=(people, dim))[labels] + 0.7 * rng.normal(size=(len(labels), dim))).astype(
        np.float32)
    split = split_gallery_probes(labels, 1, 5, 0.3)
    result = evaluate_identification(embeddings, split, fpirs=(0.1,))
    unit = unit_rows(embeddings)
    fingerprint = ModelFingerprint("ef" * 32, 112, "NCHW", "RGB", 127.5, 127.5, dim)
    threshold = Threshold(result.threshold_at_fpir["0.1"], "eval")
    with Gallery.create(tmp_path / "p.db", fingerprint, threshold, model="m", detector=None) as gallery:
        for indices, label in zip(split.gallery, split.gallery_labels, strict=True):
            gallery.enroll(f"p{label}", [(_face(unit[indices[0]]), None)], fingerprint)
        probes = [gallery.identify_faces([_face(unit[i])], fingerprint=fingerprint)[0] for i in split.probes]
        impostors = [gallery.identify_faces([_face(unit[i])], fingerprint=fingerprint)[0]
                     for i in split.unknown_probes]
    correct = [p.candidates[0].name == f"p{label}" for p, label in zip(probes, split.probe_labels, strict=True)]
    assert np.mean(correct) == result.rank1
    detected = [p.name == f"p{label}" for p, label in zip(probes, split.probe_labels, strict=True)]
    assert np.mean(detected) == result.dir_at_fpir["0.1"]
    assert np.mean([i.name is not None for i in impostors]) <= 0.1


def test_changes_by_another_connection_are_seen(tmp_path: Path, gallery: Gallery) -> None:
    """A service holding the gallery open sees people a CLI process enrolled or removed meanwhile."""
    with Gallery.open(tmp_path / "g.db") as other:
        assert other.search(_unit(1, 0, 0, 0, 0, 0, 0, 0)) == [[]]
        gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None)], FP)
        assert other.search(_unit(1, 0, 0, 0, 0, 0, 0, 0))[0][0].name == "ann"
        other.enroll("bob", [(_face(_unit(0, 1, 0, 0, 0, 0, 0, 0)), None)], FP)
        gallery.remove("ann")
        assert [m.name for m in other.search(_unit(1, 0, 0, 0, 0, 0, 0, 0), k=5)[0]] == ["bob"]
        assert other.stats()["templates"] == 1


def test_concurrent_enrolment_and_search_are_safe(gallery: Gallery) -> None:
    import threading

    errors: list[BaseException] = []

    def enrol(worker: int) -> None:
        try:
            for i in range(20):
                gallery.add(f"w{worker}", unit_rows(np.random.default_rng(worker * 100 + i).normal(size=8))[0],
                            fingerprint=FP, source_sha256=str(i))
                gallery.search(_unit(1, 0, 0, 0, 0, 0, 0, 0), k=3)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=enrol, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and gallery.stats()["templates"] == 80 and len(gallery) == 4


def test_empty_gallery_answers_unknown_without_a_score(gallery: Gallery) -> None:
    [decision] = gallery.identify_faces([_face(_unit(1, 0, 0, 0, 0, 0, 0, 0))], fingerprint=FP)
    assert decision.name is None and decision.candidates == []
    assert decision.to_dict()["score"] is None and decision.to_dict()["name"] == "unknown"


@pytest.mark.parametrize("name, message", [("a\tb", "control characters"), ("line1\nline2", "control characters"),
                                           ("x" * 201, "at most 200"), ("Unknown", "'unknown'"), ("  ", "empty")])
def test_names_that_would_break_listings_or_decisions_are_refused(gallery: Gallery, name: str, message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        gallery.add(name, _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    assert gallery.identities() == []


def test_read_only_gallery_is_a_named_error_and_non_galleries_are_left_untouched(tmp_path: Path,
                                                                                   gallery: Gallery) -> None:
    gallery.add("ann", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    gallery.close()
    read_only = sqlite3.connect(f"{(tmp_path / 'g.db').as_uri()}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(GalleryError, match=r"g\.db: cannot write the gallery"):
        with _transaction(read_only, tmp_path / "g.db"):
            read_only.execute("DELETE FROM templates")
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(GalleryError, match="not a marginface gallery"):
        Gallery.open(empty)
    assert empty.stat().st_size == 0  # opening did not turn it into a database
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="not a marginface gallery"):
        Gallery.open(other)
    db = sqlite3.connect(other)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    db.close()


def test_a_gallery_where_sqlite_cannot_write_is_a_gallery_error_naming_it() -> None:
    target = Path("/proc/marginface-test-gallery.db")  # /proc takes no new files, even for root
    with pytest.raises(GalleryError, match=r"cannot open gallery /proc/marginface-test-gallery.db for writing"):
        Gallery.create(target, FP, Threshold.fixed(0.5), model="m", detector=None)
