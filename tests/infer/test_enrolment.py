"""infer.enrolment: the plan (folder of people, one named person, loose photos) and the one policy for a photo
without a face, on a real gallery file with hand-made unit embeddings (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.errors import UsageError
from marginface.infer.enrolment import (
    FoundPhoto,
    NoUsablePhoto,
    Skipped,
    check_plan,
    enrol,
    plan_enrolment,
    plan_folder,
)
from marginface.infer.faces import FaceResult, ModelFingerprint, NoFaceError
from marginface.infer.gallery import Gallery, GalleryError, LookAlikeName
from marginface.infer.thresholds import Threshold

FINGERPRINT = ModelFingerprint("e" * 64, 112, "NCHW", "RGB", 127.5, 127.5, 4)


def _face(direction: int, size: float = 50.0) -> FaceResult:
    embedding = np.zeros(4, np.float32)
    embedding[direction] = 1.0
    return FaceResult((0.0, 0.0, size, size), np.zeros((5, 2)), 0.9, embedding, 20.0, size)


@pytest.fixture
def gallery(tmp_path: Path):
    with Gallery.create(tmp_path / "g.db", FINGERPRINT, Threshold.fixed(0.5), model="m.onnx", detector=None) as g:
        yield g


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_a_folder_of_people_is_planned_in_order_with_loose_photos_listed(tmp_path: Path):
    root = tmp_path / "people"
    _touch(root / "Bob" / "b.jpg")
    _touch(root / "Ada" / "2.png")
    _touch(root / "Ada" / "nested" / "1.jpg")
    _touch(root / ".hidden" / "h.jpg")
    (root / "Empty").mkdir()
    loose = _touch(root / "loose.jpg")
    _touch(root / "notes.txt")
    plan = plan_enrolment([root])
    assert [(p.name, [f.relative_to(root).as_posix() for f in p.files]) for p in plan.people] == [
        ("Ada", ["Ada/2.png", "Ada/nested/1.jpg"]), ("Bob", ["Bob/b.jpg"]), ("Empty", [])]
    assert plan.loose == [loose] and plan.total == 3


def test_every_name_is_checked_before_any_photo_is_read(tmp_path: Path):
    root = tmp_path / "people"
    _touch(root / "Ada" / "a.jpg")
    _touch(root / "bad\tname" / "b.jpg")
    with pytest.raises(GalleryError, match=r"holds control characters.*rename the folder \(nothing was enrolled\)"):
        plan_folder(root)
    with pytest.raises(GalleryError, match="must not be empty"):
        plan_enrolment([root / "Ada" / "a.jpg"], name="  ")


def test_look_alike_folders_are_refused_naming_both_before_any_photo_is_read(tmp_path: Path):
    for i, (first, second) in enumerate([("alice", "Alice"), ("Ann  Lee", "ann lee"), ("Zoe\u0301", "Zo\u00e9 "),
                                              ("Anna", "\u0410nna"), ("Anna", "Anna\u3164")]):
        root = tmp_path / f"people{i}"
        _touch(root / "Bob" / "b.jpg")
        _touch(root / first / "1.jpg")
        _touch(root / second / "2.jpg")
        with pytest.raises(LookAlikeName, match=r"read the same \(case, spacing.*\(nothing was enrolled\)") as err:
            plan_folder(root)
        assert repr(first) in str(err.value) and repr(second) in str(err.value), err.value


def test_a_plan_with_a_look_alike_of_someone_held_is_refused_before_anyone_is_enrolled(tmp_path: Path, gallery):
    enrol(gallery, "Bob", [FoundPhoto("b.jpg", "sb", [_face(0)])], FINGERPRINT)
    root = tmp_path / "people"
    _touch(root / "Ada" / "a.jpg")
    _touch(root / "Bob" / "more.jpg")
    check_plan(gallery, plan_folder(root))  # more photos of Bob under his very name: fine
    _touch(root / "bob" / "b2.jpg")
    _touch(root / "Cy" / "c.jpg")
    with pytest.raises(LookAlikeName) as err:  # with Bob/ beside bob/ the folders clash first
        plan_folder(root)
    (root / "Bob" / "more.jpg").unlink()
    (root / "Bob").rmdir()
    plan = plan_folder(root)
    with pytest.raises(LookAlikeName) as err:
        check_plan(gallery, plan)
    message = str(err.value)
    assert message.startswith(f"{root / 'bob'}: gallery ") and "nothing was enrolled" in message
    assert "'bob' reads the same as the existing person 'Bob' (case, spacing" in message
    with pytest.raises(LookAlikeName, match="^'BOB': gallery"):
        check_plan(gallery, plan_enrolment([root / "Ada" / "a.jpg"], name="BOB"))
    assert [i.name for i in gallery.identities()] == ["Bob"]


def test_one_named_person_and_the_wrong_shapes_of_input(tmp_path: Path):
    a, b = _touch(tmp_path / "a.jpg"), _touch(tmp_path / "more" / "b.webp")
    plan = plan_enrolment([a, tmp_path / "more"], name=" Zoe\u0301 ")
    assert [(p.name, p.files) for p in plan.people] == [("Zo\u00e9", [a, b])] and plan.loose == []
    with pytest.raises(UsageError, match="one folder with one sub-folder per person"):
        plan_enrolment([a])
    with pytest.raises(UsageError, match="has no sub-folders"):
        plan_enrolment([tmp_path / "more"])


def test_a_photo_without_a_face_is_skipped_and_reported(gallery):
    photos = [FoundPhoto("a1.jpg", "s1", [_face(0, 60), _face(1, 20)]), FoundPhoto("wall.jpg", "", []),
              FoundPhoto("a2.jpg", "s2", [_face(0)])]
    result = enrol(gallery, "Ada", photos, FINGERPRINT)
    assert (result.name, result.added, result.duplicates) == ("Ada", 2, 0)
    assert result.skipped == [Skipped("wall.jpg", "no face found")]
    assert str(result.skipped[0]) == "wall.jpg: no face found"
    assert result.to_dict()["skipped"] == [{"photo": "wall.jpg", "reason": "no face found"}]
    assert [(i.name, i.templates) for i in gallery.identities()] == [("Ada", 2)]
    stranger = gallery.identify_faces([_face(1)], fingerprint=FINGERPRINT)[0]  # the bystander was not enrolled
    assert stranger.name is None
    again = enrol(gallery, "Ada", photos[:1], FINGERPRINT)
    assert (again.added, again.duplicates, again.skipped) == (0, 1, [])


def test_a_person_none_of_whose_photos_shows_a_face_is_not_enrolled(gallery):
    with pytest.raises(NoUsablePhoto) as refused:
        enrol(gallery, "Ada", [FoundPhoto("w1.jpg", "", []), FoundPhoto("w2.jpg", "", [])], FINGERPRINT)
    assert isinstance(refused.value, NoFaceError) and refused.value.http_status == 422
    assert str(refused.value) == ("nothing enrolled for 'Ada': no photo shows a face (w1.jpg: no face found; "
                                  "w2.jpg: no face found)")
    assert [str(item) for item in refused.value.skipped] == ["w1.jpg: no face found", "w2.jpg: no face found"]
    assert gallery.identities() == []
