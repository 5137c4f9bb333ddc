"""organise: new faces go to named people first, then join clusters or form new ones; manual decisions and the
stored cut survive later runs; incremental and full runs agree on well-separated people."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from marginface.cluster.metrics import bcubed_prf
from marginface.errors import UsageError
from marginface.infer.faces import FaceResult, ModelFingerprint
from marginface.infer.gallery import Gallery
from marginface.infer.organise import organise, stored_settings
from marginface.infer.people import People
from marginface.infer.search import unit_rows
from marginface.infer.thresholds import Threshold, ThresholdError

DIM = 16
FP = ModelFingerprint("ab" * 32, 112, "NCHW", "RGB", 127.5, 127.5, DIM)
CUT = Threshold.fixed(0.6)


def _face(vector: np.ndarray) -> FaceResult:
    return FaceResult((0.0, 0.0, 10.0, 10.0), np.zeros((5, 2)), 0.9, unit_rows(vector[None])[0], 20.0, 10.0)


def _vector(person: int, rng: np.random.Generator) -> np.ndarray:
    base = np.zeros(DIM, np.float32)
    base[person] = 1.0
    return base + 0.08 * rng.normal(size=DIM).astype(np.float32)


class Photos:
    """One-face photos of synthetic people (person p lies along axis p), added to a People store."""

    def __init__(self, people: People, seed: int = 0) -> None:
        self.people, self.rng, self.count = people, np.random.default_rng(seed), 0
        self.truth: dict[int, int] = {}  # face id -> person

    def add(self, person: int, n: int = 1) -> list[int]:
        ids = []
        for _ in range(n):
            self.count += 1
            ids += self.people.add_faces(f"/photos/{self.count}.jpg", f"sha{self.count}",
                                         [_face(_vector(person, self.rng))])
        self.truth.update({i: person for i in ids})
        return ids


@pytest.fixture()
def people(tmp_path: Path) -> People:
    gallery = Gallery.create(tmp_path / "g.db", FP, Threshold.fixed(0.5), model=tmp_path / "m.onnx", detector=None)
    yield People(gallery)
    gallery.close()


def _person_of(people: People) -> dict[int, str]:
    """face id -> the ref of its person (every face must have one)."""
    return {face.id: info.person.ref for info in people.people() for face in people.show(info.person).faces}


def test_first_run_puts_each_person_in_one_cluster_and_stores_the_cut(people: People) -> None:
    photos = Photos(people)
    for person in range(3):
        photos.add(person, 4)
    report = organise(people, threshold=CUT)
    assert report.mode == "incremental" and report.considered == 12 and report.to_named == 0
    groups: dict[str, set[int]] = {}
    for face, ref in _person_of(people).items():
        groups.setdefault(ref, set()).add(photos.truth[face])
    assert len(groups) == 3 and all(len(truth) == 1 for truth in groups.values())
    assert stored_settings(people).threshold.value == pytest.approx(0.6)
    assert people.counts()["unassigned"] == 0


def test_later_runs_reuse_the_stored_cut_and_only_place_new_faces(people: People) -> None:
    photos = Photos(people)
    for person in range(3):
        photos.add(person, 4)
    organise(people, threshold=CUT)
    before = _person_of(people)
    new = photos.add(1, 2) + photos.add(5, 2)
    report = organise(people)  # no cut given: the stored one
    assert report.settings.threshold.value == pytest.approx(0.6) and report.considered == 4
    after = _person_of(people)
    assert {f: after[f] for f in before} == before  # nobody placed before moved, cluster ids kept
    old_person_1 = {before[f] for f, p in photos.truth.items() if p == 1 and f in before}
    assert {after[f] for f in new[:2]} == old_person_1  # joined the existing cluster
    assert len({after[f] for f in new[2:]}) == 1 and after[new[2]] not in set(before.values())  # a new one


def test_new_faces_go_to_named_people_first_even_enrolled_only_ones(people: People) -> None:
    photos = Photos(people)
    photos.add(0, 4)
    organise(people, threshold=CUT)
    cluster = _person_of(people)[next(iter(photos.truth))]
    people.name(cluster, "Ada")
    rng = np.random.default_rng(7)  # Bob exists only as enrolled templates: no face records at all
    people.gallery.enroll("Bob", [(_face(_vector(3, rng)), f"bob{i}") for i in range(3)], FP)
    new_ada, new_bob = photos.add(0, 2), photos.add(3, 2)
    report = organise(people)
    assert report.to_named == 4
    after = _person_of(people)
    assert {after[f] for f in new_ada} == {"Ada"} and {after[f] for f in new_bob} == {"Bob"}


def test_not_this_person_and_splits_survive_incremental_and_full_runs(people: People) -> None:
    photos = Photos(people)
    faces = photos.add(0, 5)
    organise(people, threshold=CUT)
    cluster = _person_of(people)[faces[0]]
    people.not_this_person([faces[0]], cluster)
    moved = people.split([faces[1]])
    for full in (False, True, False):
        organise(people, full=full)
        after = _person_of(people)
        assert after.get(faces[0]) != cluster and after[faces[1]] == moved.ref
        assert {after[f] for f in faces[2:]} == {cluster}


def test_full_run_agrees_with_incremental_batches(people: People) -> None:
    photos = Photos(people, seed=3)
    order = np.random.default_rng(4).permutation(np.repeat(np.arange(6), 5))
    for batch in np.array_split(order, 5):
        for person in batch:
            photos.add(int(person))
        organise(people, threshold=CUT)
    faces = sorted(photos.truth)
    truth = np.array([photos.truth[f] for f in faces])

    def labels() -> np.ndarray:
        refs = _person_of(people)
        names = {ref: k for k, ref in enumerate(sorted(set(refs.values())))}
        return np.array([names[refs[f]] for f in faces])

    incremental = labels()
    organise(people, full=True)
    assert bcubed_prf(truth, incremental).f == pytest.approx(1.0)
    assert bcubed_prf(truth, labels()).f == pytest.approx(1.0)


def test_a_first_run_without_a_cut_names_the_options(people: People) -> None:
    Photos(people).add(0, 2)
    with pytest.raises(ThresholdError, match="--threshold T, or --report"):
        organise(people)
    assert people.counts()["unassigned"] == 2  # nothing written


@pytest.mark.parametrize("size", [0, -3, 1001, 10**9, 2.5, True])
def test_a_min_size_out_of_range_is_refused_naming_it(people: People, size) -> None:
    Photos(people).add(0, 2)
    with pytest.raises(UsageError, match=rf"min_size is {size!r}; .* from 1 to 1000"):
        organise(people, threshold=CUT, min_size=size)
    assert people.counts()["unassigned"] == 2 and stored_settings(people) is None  # nothing written


def test_a_stored_min_size_out_of_range_is_refused_until_a_run_gives_another(people: People) -> None:
    Photos(people).add(0, 2)
    assert organise(people, threshold=CUT, min_size=1000).settings.min_size == 1000  # the bound itself is kept
    settings = json.loads(people.setting("clustering"))
    db = sqlite3.connect(people.path, isolation_level=None)
    db.execute("UPDATE meta SET value = ? WHERE key = 'clustering'", (json.dumps({**settings, "min_size": 5000}),))
    db.close()
    with pytest.raises(UsageError, match=r"g\.db: the stored clustering min_size is 5000; .* stores another"):
        organise(people)
    assert organise(people, min_size=2).settings.min_size == 2 and stored_settings(people).min_size == 2


def test_a_split_keeps_the_rest_apart_until_the_user_moves_one_across(people: People) -> None:
    from marginface.infer.people import CannotLinkConflict

    photos = Photos(people)
    faces = photos.add(0, 4)
    organise(people, threshold=CUT)
    moved = people.split([faces[0]])
    organise(people, full=True)
    assert _person_of(people)[faces[1]] != moved.ref  # the split's implied mark holds in a full run
    people.split([faces[1]], into=moved.ref)  # the user moving one across is no conflict: the mark gives way
    assert _person_of(people)[faces[1]] == moved.ref and people.show(moved.ref).not_faces == []
    people.not_this_person([faces[2]], moved.ref)  # an explicit mark is refused instead
    with pytest.raises(CannotLinkConflict, match=f"face {faces[2]} was marked 'not {moved.ref}'"):
        people.split([faces[2]], into=moved.ref)


def test_a_merge_of_two_clusters_survives_a_full_run(people: People) -> None:
    photos = Photos(people)
    a, b = photos.add(0, 4), photos.add(1, 4)
    organise(people, threshold=CUT)
    kept = people.merge(_person_of(people)[a[0]], _person_of(people)[b[0]])
    organise(people, full=True)
    assert {_person_of(people)[f] for f in a + b} == {kept.ref}  # the user's merge holds, both halves


def test_split_then_merge_back_leaves_no_mark_against_the_merged_person(people: People) -> None:
    photos = Photos(people)
    faces = photos.add(0, 5)
    organise(people, threshold=CUT)
    source = _person_of(people)[faces[0]]
    moved = people.split(faces[:2])
    people.merge(source, moved.ref)
    organise(people, full=True)
    after = _person_of(people)
    assert {after[f] for f in faces} == {source} and people.show(source).not_faces == []


def test_a_decision_landing_during_a_run_makes_it_start_again(people: People, monkeypatch) -> None:
    from marginface.infer import organise as organise_module

    photos = Photos(people)
    faces = photos.add(0, 3)
    organise(people, threshold=CUT)
    cluster = _person_of(people)[faces[0]]
    new = photos.add(0, 2)
    real, calls = People.assignments, []

    def snapshot_then_decide(self: People):
        state = real(self)
        calls.append(state.decisions)
        if len(calls) == 1:  # another process names the cluster after this run's snapshot
            self.name(cluster, "Ada")
        return state

    monkeypatch.setattr(People, "assignments", snapshot_then_decide)
    report = organise_module.organise(people)
    assert len(calls) == 2 and calls[1] == calls[0] + 1  # the first snapshot was stale: a second run
    assert report.to_named == 2 and {_person_of(people)[f] for f in new} == {"Ada"}
