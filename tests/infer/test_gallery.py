"""Gallery: SQLite persistence, one transaction per change, exact best-template search, open-set decisions,
model fingerprint checks, and the same numbers as eval's identification protocol."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marginface.eval.identification import evaluate_identification, split_gallery_probes
from marginface.infer.gallery import (
    Gallery,
    GalleryDamaged,
    GalleryError,
    GalleryModelMismatch,
    GalleryNotWritable,
    GalleryUnavailable,
    LookAlikeName,
    NameConflict,
    NameTaken,
    SharedPhoto,
    UnknownIdentity,
    _transaction,
    check_identity_name,
    name_spelling,
)
from marginface.infer.recognizer import FaceResult, ModelFingerprint
from marginface.infer.search import unit_rows
from marginface.infer.thresholds import ScoreError, Threshold

from ..conftest import remount_read_only, tmpfs
from .conftest import FP, OTHER


def _unit(*values: float) -> np.ndarray:
    return unit_rows(np.array(values, np.float32))[0]


def _face(embedding: np.ndarray, score: float = 0.9) -> FaceResult:
    return FaceResult((0.0, 0.0, 10.0, 10.0), np.zeros((5, 2)), score, embedding, 20.0, 10.0)


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
    with pytest.raises(NameTaken, match=r"'cy' already exists; if anne is cy, merge them \(`marginface people merge "
                                        rf"{tmp_path}/g\.db cy anne`\), else choose another name") as taken:
        gallery.rename("anne", "cy")
    assert isinstance(taken.value, NameConflict) and taken.value.http_status == 409  # as LookAlikeName
    gallery.close()
    with Gallery.open(tmp_path / "g.db") as again:
        assert [i.name for i in again.identities()] == ["anne", "cy"]
        assert again.stats()["templates"] == 2


def test_a_new_name_differing_only_by_case_or_spacing_is_refused_on_enrol_and_rename(
        gallery: Gallery, tmp_path: Path) -> None:
    """The probe: enrolling 'alice' beside 'Alice', or renaming bob to 'ALICE', made two people no listing could
    tell apart. The rule is the one People.name follows (Gallery.refuse_look_alike)."""
    gallery.enroll("Alice Smith", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), "a1")], FP)
    gallery.enroll("bob", [(_face(_unit(0, 1, 0, 0, 0, 0, 0, 0)), "b1")], FP)
    for look_alike in ["alice smith", "ALICE  SMITH", " Alice\u00a0Smith", "alice \u2003smith"]:
        with pytest.raises(LookAlikeName, match=rf"g\.db: {re.escape(repr(look_alike.strip()))} reads the same as "
                                                r"the existing person 'Alice Smith' \(case, spacing.*enrol them "
                                                r"under the existing spelling 'Alice Smith'"):
            gallery.enroll(look_alike, [(_face(_unit(1, 1, 0, 0, 0, 0, 0, 0)), "a2")], FP)
    with pytest.raises(LookAlikeName, match="existing person 'Alice Smith'"):
        gallery.add("alice smith", _unit(1, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="a2")
    with pytest.raises(LookAlikeName, match=r"'ALICE SMITH' reads the same as the existing person 'Alice Smith'.*if "
                                            rf"bob is Alice Smith, merge them \(`marginface people merge "
                                            rf"{tmp_path}/g\.db 'Alice Smith' bob`\)"):
        gallery.rename("bob", "ALICE SMITH")
    assert [(i.name, i.templates) for i in gallery.identities()] == [("Alice Smith", 1), ("bob", 1)]  # unchanged
    # the exact name (as stored: NFC, stripped) is the same person: more photos of them
    assert gallery.enroll(" Alice Smith ", [(_face(_unit(1, 1, 0, 0, 0, 0, 0, 0)), "a2")], FP) == 1
    assert gallery.add("Alice Smith", _unit(1, 2, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="a3") is not None
    gallery.rename("Alice Smith", "alice smith")  # a new spelling of the same person
    gallery.rename("bob", "Bob")
    assert LookAlikeName.http_status == 409 and issubclass(LookAlikeName, NameConflict)
    gallery.close()
    with Gallery.open(tmp_path / "g.db") as again:
        assert [(i.name, i.templates) for i in again.identities()] == [("Bob", 1), ("alice smith", 3)]


@pytest.mark.parametrize("look_alike", [
    "\u0410nna", "\u0391nna", "\uff21nna", "\U0001d400nna", "Ann\u0430", "Anna\u3164", "Anna\u2800", "Anna\u034f",
    "Anna\ufe0f", "Anna\u115f", "Anna\u1160", "An\u034fna", "ANNA\u3164 "])
def test_homoglyphs_other_forms_and_invisible_characters_make_look_alikes(gallery: Gallery, look_alike: str) -> None:
    """The hostile probe: Cyrillic or Greek A, full-width or math-bold A, or an invisible filler after the name
    made a second 'Anna' no listing could tell apart: the rule folds them all (name_spelling)."""
    gallery.add("Anna", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    with pytest.raises(LookAlikeName, match=r"reads the same as the existing person 'Anna' \(case, spacing, Unicode "
                                            r"form \(NFKC\), invisible characters and look-alike letters"):
        gallery.add(look_alike, _unit(0, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    gallery.add("bob", _unit(0, 0, 1, 0, 0, 0, 0, 0), fingerprint=FP)
    with pytest.raises(LookAlikeName, match="existing person 'Anna'"):
        gallery.rename("bob", look_alike)
    assert [i.name for i in gallery.identities()] == ["Anna", "bob"]


def test_turkish_dotted_and_dotless_i_are_look_alikes_but_diacritics_still_count(gallery: Gallery) -> None:
    """İ and ı read as i ('İsmail' is 'Ismail'); 'José' is not 'Jose', nor 'Änna' 'Anna' (diacritics count)."""
    gallery.add("Ismail", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    for look_alike in ["\u0130smail", "isma\u0131l", "I\u0307smail"]:
        with pytest.raises(LookAlikeName, match="existing person 'Ismail'"):
            gallery.add(look_alike, _unit(0, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    for name, other in [("Jose", "Jos\u00e9"), ("Anna", "A\u0308nna"), ("Zoe", "Zo\u00eb")]:
        gallery.add(name, _unit(0, 0, 1, 0, 0, 0, 0, 0), fingerprint=FP)
        gallery.add(other, _unit(0, 0, 0, 1, 0, 0, 0, 0), fingerprint=FP)
    assert name_spelling("Anna\u3164Smith") == name_spelling(" anna  smith") == "anna smith"
    assert name_spelling("\u0392eta") == name_spelling("beta") != name_spelling("b\u00e9ta")


@pytest.mark.parametrize("name, message", [
    ("\u3164", "only invisible characters"), ("\u2800", "only invisible characters"),
    ("\u034f", "only invisible characters"), ("\u115f\u1160", "only invisible characters"),
    ("\ufe0f\u3164", "only invisible characters"), ("unknown\u3164", "reads as 'unknown'"),
    ("unknown\u2800", "reads as 'unknown'"), ("u\u034fnknown", "reads as 'unknown'"),
    ("UNKN\u039fWN", "reads as 'unknown'")])
def test_names_of_invisible_characters_or_reading_as_unknown_are_refused(gallery: Gallery, name: str,
                                                                         message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        check_identity_name(name)
    with pytest.raises(GalleryError, match=message):
        gallery.add(name, _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    assert gallery.identities() == []


def test_enrolling_under_a_stored_name_of_another_normal_form_adds_to_that_person(gallery: Gallery,
                                                                                   tmp_path: Path) -> None:
    """A name stored before names were normalised (NFD 'Zoe' + combining acute) is the person an NFC 'Zoé' enrols
    into: not a second identity, not a look-alike refusal."""
    gallery.add("Zo\u00e9", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="z1")
    with sqlite3.connect(tmp_path / "g.db") as other:  # as an older version wrote it
        other.execute("UPDATE identities SET name = ?", ("Zoe\u0301",))
    assert gallery.add("Zo\u00e9", _unit(1, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="z2") is not None
    assert [(i.name, i.templates) for i in gallery.identities()] == [("Zoe\u0301", 2)]


def test_identity_lookups_and_unit_embedding_are_public(gallery: Gallery, tmp_path: Path) -> None:
    """What infer/people.py needs from a gallery: an identity's id and stored name, and one embedding as the unit
    vector a template stores; each as committed now, by any process."""
    gallery.add("Zo\u00e9", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    identity = gallery.identity_id(" Zoe\u0301 ")  # NFD, with spaces: the same stored name
    assert gallery.identity_name(identity) == "Zo\u00e9"
    with pytest.raises(UnknownIdentity, match="has no identity 'ann'"):
        gallery.identity_id("ann")
    with pytest.raises(UnknownIdentity, match=f"has no identity id {identity + 1}"):
        gallery.identity_name(identity + 1)
    with Gallery.open(tmp_path / "g.db") as other:  # another connection's commit is seen
        other.add("ann", _unit(0, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP)
        other.rename("Zo\u00e9", "Zoe")
    assert gallery.identity_name(identity) == "Zoe" and gallery.identity_name(gallery.identity_id("ann")) == "ann"
    vector = gallery.unit_embedding(np.arange(1, 9, dtype=np.float64))
    assert vector.dtype == np.float32 and vector.shape == (8,)
    assert np.isclose(np.linalg.norm(vector), 1.0) and np.allclose(vector, _unit(*range(1, 9)))
    with pytest.raises(GalleryError, match="must be 8 finite values, got shape"):
        gallery.unit_embedding(np.full(8, np.nan))


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


class _CommitBetweenReads:
    """A connection that lets another gallery commit a new person right after the identities are read."""

    def __init__(self, db: sqlite3.Connection, commit: Callable[[], object]) -> None:
        self._conn, self._commit = db, commit

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        cursor = self._conn.execute(sql, *args)
        if sql.startswith("SELECT id, name FROM identities") and self._commit is not None:
            self._commit, commit = None, self._commit
            commit()
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_loading_reads_identities_and_templates_from_one_snapshot(tmp_path: Path, gallery: Gallery) -> None:
    """A commit between the two reads of a load logged a live template as damaged ('belongs to no identity')."""
    gallery.add("ann", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    with Gallery.open(tmp_path / "g.db") as writer:
        real = gallery._db
        gallery._db = _CommitBetweenReads(real, lambda: writer.add("bob", _unit(0, 1, 0, 0, 0, 0, 0, 0),
                                                                   fingerprint=FP))
        try:
            gallery._load()
        finally:
            gallery._db = real
        assert gallery._damaged == [] and not real.in_transaction
        assert gallery.search(_unit(0, 1, 0, 0, 0, 0, 0, 0), k=1)[0][0].name == "bob"  # the next sync sees bob
        assert gallery._damaged == []


def test_concurrent_enrolment_and_search_are_safe(gallery: Gallery) -> None:
    import threading

    errors: list[BaseException] = []

    def enrol(worker: int) -> None:
        try:
            for i in range(20):
                gallery.add(f"w{worker}", unit_rows(np.random.default_rng(worker * 100 + i).normal(size=8))[0],
                            fingerprint=FP, source_sha256=f"{worker}-{i}")
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


# -- damaged templates: verified on load and before every search, never used ----------------------------------
def _write_sql(path: Path, *statements: str) -> None:
    """Run statements on the gallery file through a connection of their own (as another process would)."""
    db = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        db.execute(statement)
    db.close()


def _flip_bit(path: Path, template_id: int, byte: int, bit: int) -> None:
    """Flip one bit of one stored template the way a bad sector or a stray write would (SQLite sees a valid row)."""
    db = sqlite3.connect(path, isolation_level=None)
    blob = bytearray(db.execute("SELECT embedding FROM templates WHERE id = ?", (template_id,)).fetchone()[0])
    blob[byte] ^= 1 << bit
    db.execute("UPDATE templates SET embedding = ? WHERE id = ?", (bytes(blob), template_id))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def _set_float(path: Path, template_id: int, index: int, value: float) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    vector = np.frombuffer(db.execute("SELECT embedding FROM templates WHERE id = ?", (template_id,)).fetchone()[0],
                           "<f4").copy()
    vector[index] = value
    db.execute("UPDATE templates SET embedding = ? WHERE id = ?", (vector.tobytes(), template_id))
    db.close()


@pytest.fixture()
def two_people(tmp_path: Path, gallery: Gallery) -> Path:
    """g.db with ann (templates 1, 2) and bob (template 3), closed."""
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), "a1"), (_face(_unit(1, 1, 0, 0, 0, 0, 0, 0)), "a2")],
                   FP)
    gallery.enroll("bob", [(_face(_unit(0, 1, 0, 0, 0, 0, 0, 0)), "b1")], FP)
    gallery.close()
    return tmp_path / "g.db"


@pytest.mark.parametrize("template, byte, bit, reason", [
    (2, 3, 6, "norm"),  # the exponent's top bit of 0.7071: 2.4e38, the probe that named strangers (score 5e36)
    (1, 3, 6, "non-finite"),  # the same bit of 1.0: infinity
    (2, 0, 0, "checksum mismatch"),  # the last mantissa bit: plausible, finite, unit norm to 1e-7
])
def test_a_flipped_bit_in_a_stored_template_is_refused_never_searched(two_people: Path, template: int, byte: int,
                                                                      bit: int, reason: str) -> None:
    _flip_bit(two_people, template, byte, bit)
    stranger = _unit(0.3, 0.2, 0.9, 0, 0, 0, 0, 0)
    with Gallery.open(two_people) as again:
        with pytest.raises(GalleryDamaged, match=rf"{two_people}.*template {template} of 'ann': .*{reason}"):
            again.identify_faces([_face(stranger)], fingerprint=FP)
        with pytest.raises(GalleryDamaged):
            again.search(stranger)
        [damaged] = again.check()
        assert str(damaged) == f"template {template} of 'ann': {damaged.reason}"
        assert [i.name for i in again.identities()] == ["ann", "bob"]  # listing and fixing still work


@pytest.mark.parametrize("value, reason", [(np.nan, "non-finite"), (np.inf, "non-finite"), (72.8, "norm")])
def test_nan_inf_and_huge_values_in_a_template_are_refused(two_people: Path, value: float, reason: str) -> None:
    _set_float(two_people, 3, 2, value)
    with Gallery.open(two_people) as again:
        with pytest.raises(GalleryDamaged, match=rf"template 3 of 'bob': .*{reason}"):
            again.identify_faces([_face(_unit(0, 1, 0, 0, 0, 0, 0, 0))], fingerprint=FP)


def test_a_template_moved_to_another_person_or_row_fails_its_checksum(two_people: Path) -> None:
    _write_sql(two_people,
               "UPDATE templates SET identity_id = (SELECT id FROM identities WHERE name = 'bob') WHERE id = 1",
               "UPDATE templates SET embedding = (SELECT embedding FROM templates WHERE id = 3) WHERE id = 2")
    with Gallery.open(two_people) as again:
        damaged = again.check()
    assert [(d.template_id, d.identity) for d in damaged] == [(1, "bob"), (2, "ann")]
    assert all("checksum mismatch" in d.reason for d in damaged)


def test_damage_written_by_another_process_is_caught_at_the_next_search(two_people: Path) -> None:
    with Gallery.open(two_people) as serving:
        assert serving.search(_unit(1, 0, 0, 0, 0, 0, 0, 0))[0][0].name == "ann"
        _flip_bit(two_people, 2, 1, 0)
        with pytest.raises(GalleryDamaged, match="template 2 of 'ann'"):
            serving.search(_unit(1, 0, 0, 0, 0, 0, 0, 0))


def test_dropping_damaged_templates_or_removing_their_person_makes_the_gallery_searchable(two_people: Path) -> None:
    _flip_bit(two_people, 1, 0, 0)
    _flip_bit(two_people, 3, 0, 0)
    with Gallery.open(two_people) as again:
        assert [d.template_id for d in again.check()] == [1, 3]
        again.remove("bob")
        assert [d.template_id for d in again.check()] == [1]
        assert again.drop_templates([d.template_id for d in again.check()]) == 1
        assert again.check() == []
        assert again.search(_unit(1, 0.1, 0, 0, 0, 0, 0, 0))[0][0].name == "ann"
        assert again.stats()["templates"] == 1


def test_a_version_1_gallery_gets_checksums_when_opened(two_people: Path) -> None:
    _write_sql(two_people, "ALTER TABLE templates DROP COLUMN checksum",
               "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with Gallery.open(two_people) as again:
        assert again.check() == []
        assert again.search(_unit(0, 1, 0, 0, 0, 0, 0, 0))[0][0].name == "bob"
    db = sqlite3.connect(two_people)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    assert db.execute("SELECT COUNT(*) FROM templates WHERE checksum IS NULL").fetchone() == (0,)
    db.close()
    _flip_bit(two_people, 2, 0, 0)
    with Gallery.open(two_people) as again:
        assert [d.template_id for d in again.check()] == [2]


def test_a_score_outside_minus_one_one_never_reaches_a_decision(gallery: Gallery) -> None:
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None)], FP)
    for query in (np.full(8, np.nan, np.float32), np.full(8, 3.0, np.float32)):
        with pytest.raises(GalleryError, match="query embedding 0 is not a unit vector"):
            gallery.identify_faces([_face(query)], fingerprint=FP)
    gallery._index.matrix[0] *= 40.0  # memory damaged after verification: the decision is still refused
    with pytest.raises(GalleryDamaged, match=r"identity 'ann': score 40\.0 is not a cosine"):
        gallery.identify_faces([_face(_unit(1, 0, 0, 0, 0, 0, 0, 0))], fingerprint=FP)
    for score in (1.5, -1.01, float("nan"), float("inf")):
        with pytest.raises(ScoreError, match="is not a cosine"):
            gallery.threshold.accepts(score)
    assert gallery.threshold.accepts(1.0 + 1e-7) and not gallery.threshold.accepts(-1.0)


def test_membership_and_changes_see_another_connection_s_commits(tmp_path: Path, gallery: Gallery) -> None:
    """`in`, len, remove and rename answer for what is committed now, not for what this connection loaded."""
    with Gallery.open(tmp_path / "g.db") as other:
        assert "ann" not in other and len(other) == 0
        gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None)], FP)
        assert "ann" in other and len(other) == 1
        gallery.rename("ann", "anne")
        with pytest.raises(UnknownIdentity, match="has no identity 'ann'"):
            other.remove("ann")
        other.remove("anne")
        assert "anne" not in gallery and gallery.search(_unit(1, 0, 0, 0, 0, 0, 0, 0)) == [[]]
        with pytest.raises(UnknownIdentity):
            gallery.rename("anne", "x")


# -- the file removed or replaced underneath an open gallery ----------------------------------------------------
def test_changes_into_a_removed_or_replaced_gallery_file_are_refused_not_acknowledged(tmp_path: Path,
                                                                                     gallery: Gallery) -> None:
    """The probe: with the file (or its -wal) deleted, enrolments still succeeded and vanished at exit."""
    path = tmp_path / "g.db"
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None)], FP)
    for _ in range(3):  # another process opening, changing and closing the file is no replacement
        with Gallery.open(path) as other:
            other.add("bob", _unit(0, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP)
            other.remove("bob")
    gallery.add("cy", _unit(0, 0, 1, 0, 0, 0, 0, 0), fingerprint=FP)
    Path(f"{path}-wal").unlink()
    with pytest.raises(GalleryUnavailable, match=r"write-ahead log .*g\.db-wal was removed while the gallery was open"):
        gallery.add("dee", _unit(0, 0, 0, 1, 0, 0, 0, 0), fingerprint=FP)
    with pytest.raises(GalleryUnavailable):
        gallery.remove("ann")
    with pytest.raises(GalleryUnavailable):
        gallery.stats()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_gallery_file_removed_or_replaced_is_named_before_any_change(tmp_path: Path, gallery: Gallery,
                                                                       how: str) -> None:
    path = tmp_path / "g.db"
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), None)], FP)
    path.unlink()
    if how == "replaced":  # a restored backup, or another gallery moved into place
        Gallery.create(path, FP, Threshold.fixed(0.5), model="m", detector=None).close()
    with pytest.raises(GalleryUnavailable, match=rf"gallery file {path} was {how}"):
        gallery.enroll("bob", [(_face(_unit(0, 1, 0, 0, 0, 0, 0, 0)), None)], FP)
    with pytest.raises(GalleryUnavailable, match=f"was {how}"):
        gallery.rename("ann", "anne")
    with pytest.raises(GalleryUnavailable):
        gallery.search(_unit(1, 0, 0, 0, 0, 0, 0, 0))


def test_a_file_removed_during_the_transaction_is_not_acknowledged(tmp_path: Path, gallery: Gallery) -> None:
    path = tmp_path / "g.db"
    calls = []

    def remove_after_begin() -> None:
        calls.append(1)
        if len(calls) == 2:  # after COMMIT: the file went away while the change was written
            path.unlink()
        Gallery._check_files(gallery)

    with pytest.raises(GalleryUnavailable, match="was removed"):
        with _transaction(gallery._db, path, check=remove_after_begin) as db:
            db.execute("INSERT INTO identities (name, created, updated) VALUES ('x', 0, 0)")


def _damage_pages_of(path: Path, index: str) -> None:
    """Overwrite every page SQLite keeps for `index` (a b-tree the loader never reads; listings do)."""
    db = sqlite3.connect(path)
    size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = [row[0] for row in db.execute("SELECT pageno FROM dbstat WHERE name = ?", (index,))]
    db.close()
    data = bytearray(path.read_bytes())
    for page in pages:
        for offset in range((page - 1) * size, page * size, 7):
            data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_damaged_index_page_is_a_gallery_error_naming_the_file(two_people: Path) -> None:
    """The probe: `gallery list` on a damaged file ended in sqlite3.DatabaseError's traceback."""
    _damage_pages_of(two_people, "templates_identity")
    with Gallery.open(two_people) as again:
        with pytest.raises(GalleryError, match=rf"{two_people}: cannot read the gallery \(database disk image is "
                                               r"malformed\).*integrity_check"):
            again.identities()


@pytest.mark.parametrize("name, message", [
    ("ｕｎｋｎｏｗｎ", "reads as 'unknown'"), ("unkn\u043ewn", "reads as 'unknown'"),  # full-width; Cyrillic o
    ("Unkno\u051dn", "reads as 'unknown'"), ("ᴜɴᴋɴᴏᴡɴ", "reads as 'unknown'"), ("unkn0wn", "reads as"),
    ("𝐮𝐧𝐤𝐧𝐨𝐰𝐧", "reads as 'unknown'"), (".", "cannot be addressed in a URL"), (" .. ", "cannot be addressed"),
    ("．．", "cannot be addressed"), ("bad\udcffname", "not valid UTF-8"), ("bad\ufffdname", "not valid UTF-8"),
])
def test_names_that_read_as_unknown_dots_and_broken_utf8_are_refused(gallery: Gallery, name: str,
                                                                      message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        gallery.add(name, _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP)
    assert gallery.identities() == []


def test_names_are_normalised_once_on_enrol_rename_remove_and_lookup(gallery: Gallery) -> None:
    """The probe: 'Zoe' + combining acute (NFD, as macOS file names are) and 'Zoé' (NFC) were two people, and
    neither could be deleted by the other spelling."""
    decomposed, composed = "Zoe\u0301", "Zo\u00e9"
    gallery.add(f" {decomposed} ", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="z1")
    gallery.add(composed, _unit(1, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="z2")
    assert [(i.name, i.templates) for i in gallery.identities()] == [(composed, 2)]
    assert decomposed in gallery and f"  {composed}" in gallery
    gallery.rename(f"{decomposed} ", "Zoe\u0308")  # stored as 'Zoë' (NFC)
    assert [i.name for i in gallery.identities()] == ["Zo\u00eb"]
    with pytest.raises(GalleryError, match="already exists"):
        gallery.add("ann", _unit(0, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP) and gallery.rename("ann", "Zo\u00eb ")
    gallery.remove("Zoe\u0308")
    gallery.remove("ann")
    assert gallery.identities() == []


def test_the_same_photo_under_two_names_is_refused_unless_allowed(gallery: Gallery) -> None:
    """The probe: one photo enrolled as two people made identify answer whichever came first."""
    gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), "same-sha")], FP)
    assert gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), "same-sha")], FP) == 0  # a repeat
    with pytest.raises(SharedPhoto, match=r"ann.jpg \(sha256 same-sha\.\.\.\) is already enrolled as 'ann'; "
                                          r"enrolling it as 'bob'"):
        gallery.enroll("bob", [(_face(_unit(0, 1, 0, 0, 0, 0, 0, 0)), "b1"), (_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)),
                                                                             "same-sha")], FP,
                       photo_names=["bob.jpg", "ann.jpg"])
    assert [i.name for i in gallery.identities()] == ["ann"]  # nothing of bob's was written
    assert gallery.enroll("bob", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), "same-sha")], FP,
                          allow_shared_photos=True) == 1


def test_a_gallery_on_a_read_only_mount_opens_read_only(tmp_path: Path) -> None:
    """The probe: `gallery list` on a read-only mount failed with 'cannot open gallery ... for writing'."""
    with tmpfs(tmp_path / "ro", "1m") as disk:
        path = disk / "g.db"
        with Gallery.create(path, FP, Threshold.fixed(0.5), model=tmp_path / "m.onnx", detector=None) as gallery:
            gallery.add("ann", _unit(1, 0, 0, 0, 0, 0, 0, 0), fingerprint=FP, source_sha256="a1")
        remount_read_only(disk)
        with Gallery.open(path) as again:
            assert again.read_only == f"{disk} is on a read-only mount"
            assert [i.name for i in again.identities()] == ["ann"] and "ann" in again
            assert again.search(_unit(1, 0, 0, 0, 0, 0, 0, 0), k=1)[0][0].name == "ann"
            with pytest.raises(GalleryNotWritable, match=rf"gallery {path} is open read-only \({disk} is on a "
                                                         r"read-only mount\)"):
                again.add("bob", _unit(0, 1, 0, 0, 0, 0, 0, 0), fingerprint=FP)
            assert "read-only mount" in again.write_problem()


def test_read_only_on_request_refuses_every_change(two_people: Path) -> None:
    with Gallery.open(two_people, read_only=True) as gallery:
        assert len(gallery) == 2
        for change in (lambda: gallery.remove("ann"), lambda: gallery.rename("ann", "anna"),
                       lambda: gallery.drop_templates([1])):
            with pytest.raises(GalleryNotWritable, match="open read-only"):
                change()
    with Gallery.open(two_people) as gallery:
        assert gallery.read_only is None and len(gallery) == 2


def test_a_gallery_whose_write_ahead_log_was_deleted_says_so(tmp_path: Path) -> None:
    """A file with no tables and no -wal beside it: the message says the log is gone, not just 'not a gallery'."""
    from marginface.infer.gallery import Gallery, GalleryError

    empty = tmp_path / "people.db"
    empty.write_bytes(b"")
    message = r"people\.db: not a marginface gallery: it holds no tables .*people\.db-wal is gone"
    with pytest.raises(GalleryError, match=message):
        Gallery.open(empty)


def test_check_finds_a_damaged_index_that_listings_would_not(two_people: Path) -> None:
    """A damaged index page can make listings show nothing without an error: `check` runs integrity_check."""
    from marginface.infer.gallery import GalleryUnreadable

    _damage_pages_of(two_people, "templates_identity")
    with Gallery.open(two_people) as again:
        with pytest.raises(GalleryUnreadable, match=rf"{two_people}: .*damaged"):
            again.check()
