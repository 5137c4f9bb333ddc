"""`marginface people ...` over a gallery with face records, and `gallery reembed` on real LFW photos."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from marginface.cli import main
from marginface.infer.faces import FaceResult, ModelFingerprint
from marginface.infer.gallery import Gallery
from marginface.infer.people import People
from marginface.infer.search import unit_rows
from marginface.infer.thresholds import Threshold
from tests.infer.test_people import nn_cluster

FP = ModelFingerprint("ab" * 32, 112, "NCHW", "RGB", 127.5, 127.5, 8)
MODEL = "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"


@pytest.fixture()
def db(tmp_path: Path) -> tuple[str, dict[int, list[int]]]:
    """A gallery with two clusters of three faces each (photos written to tmp_path); {person: face ids}."""
    rng = np.random.default_rng(0)
    faces: dict[int, list[int]] = {}
    with Gallery.create(tmp_path / "g.db", FP, Threshold.fixed(0.5), model="m.onnx", detector=None) as gallery:
        people = People(gallery)
        for photo in range(6):
            person = photo % 2
            path = tmp_path / f"{photo}.png"
            cv2.imwrite(str(path), rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
            vector = np.eye(8, dtype=np.float32)[person] + 0.05 * rng.normal(size=8).astype(np.float32)
            landmarks = np.array([[60, 70], [100, 70], [80, 90], [65, 110], [95, 110]], float)
            face = FaceResult((40.0, 40.0, 80.0, 80.0), landmarks, 0.9, unit_rows(vector)[0], 20.0, 80.0)
            faces.setdefault(person, []).extend(people.add_faces(str(path), f"sha{photo}", [face]))
        snapshot = people.assignments()
        people.apply_clustering(snapshot.face_ids, nn_cluster(snapshot.embeddings, threshold=0.8))
    return str(tmp_path / "g.db"), faces


def _ref(gallery: str, face: int, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["people", "list", gallery, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)["people"]
    for person in listing:
        assert main(["people", "show", gallery, person["ref"], "--json"]) == 0
        if face in [f["id"] for f in json.loads(capsys.readouterr().out)["face_records"]]:
            return person["ref"]
    raise AssertionError(f"face {face} is in nobody")


def test_list_name_merge_split_not_remove(db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gallery, faces = db
    assert main(["people", "list", gallery]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("@") == 2 and "3 faces" in captured.out
    assert "0 named, 2 clusters; 6 faces in 6 photos, 0 unassigned" in captured.err
    first, second = _ref(gallery, faces[0][0], capsys), _ref(gallery, faces[1][0], capsys)
    assert main(["people", "name", gallery, first, "Ada"]) == 0
    assert f"{first} is now Ada" in capsys.readouterr().out
    assert main(["people", "name", gallery, second, " ada "]) == 2
    err = capsys.readouterr().err
    assert "'ada' reads the same as the existing person 'Ada' (case" in err
    assert f"marginface people merge {gallery} Ada {second}" in err
    assert main(["people", "show", gallery, "Ada"]) == 0
    out = capsys.readouterr().out
    assert "Ada: 3 faces (3 placed by you), 3 templates" in out and f"face {faces[0][0]}\tuser" in out
    assert main(["people", "split", gallery, str(faces[0][2])]) == 0
    assert "moved 1 faces to @" in (out := capsys.readouterr().out)
    third = out.split(" to ")[1].strip()
    assert main(["people", "merge", gallery, "Ada", third]) == 0
    assert f"merged Ada and {third} into Ada" in capsys.readouterr().out
    assert main(["people", "not", gallery, "Ada", str(faces[0][1])]) == 0
    assert "1 taken out of Ada" in capsys.readouterr().out
    assert main(["people", "show", gallery, "Ada", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["not_faces"] == [faces[0][1]] and shown["templates"] == 2
    assert main(["people", "split", gallery, "--to", "Ada", str(faces[0][1])]) == 2
    assert "was marked 'not Ada'" in capsys.readouterr().err
    assert main(["people", "remove", gallery, second]) == 0
    assert "3 faces, 0 templates" in capsys.readouterr().out
    assert main(["people", "show", gallery, second]) == 2
    assert f"has no cluster {second}" in capsys.readouterr().err
    assert main(["people", "show", gallery, "Nobody"]) == 2
    assert "has no identity 'Nobody' (clusters are addressed as @ID)" in capsys.readouterr().err
    assert main(["people", "split", gallery, "999"]) == 2
    assert "has no face 999" in capsys.readouterr().err
    assert main(["gallery", "list", gallery, "--json"]) == 0  # the named person is an identity as ever
    assert [(i["name"], i["templates"]) for i in json.loads(capsys.readouterr().out)] == [("Ada", 2)]


def test_gallery_rename_to_a_look_alike_name_is_refused_and_its_hint_works(
        db, capsys: pytest.CaptureFixture[str]) -> None:
    gallery, faces = db
    assert main(["people", "name", gallery, _ref(gallery, faces[0][0], capsys), "Ada"]) == 0
    with Gallery.open(gallery) as store:
        store.add("bob", np.eye(8, dtype=np.float32)[0], fingerprint=FP, source_sha256="bob-1")
    capsys.readouterr()
    assert main(["gallery", "rename", gallery, "bob", "ADA"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marginface: error: gallery ") and err.count("\n") == 1  # one line, no traceback
    assert "'ADA' reads the same as the existing person 'Ada' (case, spacing" in err
    assert f"merge them (`marginface people merge {gallery} Ada bob`)" in err
    assert main(["gallery", "rename", gallery, "bob", "Ada"]) == 2  # the name itself: taken, same advice
    err = capsys.readouterr().err
    assert "identity 'Ada' already exists" in err and f"`marginface people merge {gallery} Ada bob`" in err
    assert main(["people", "merge", gallery, "Ada", "bob"]) == 0  # what the hint says works
    assert "merged Ada and bob into Ada" in capsys.readouterr().out
    assert main(["gallery", "list", gallery, "--json"]) == 0
    assert [(i["name"], i["templates"]) for i in json.loads(capsys.readouterr().out)] == [("Ada", 4)]


def test_show_annotate_writes_a_contact_sheet_and_check_finds_damage(db, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    gallery, faces = db
    person = _ref(gallery, faces[1][0], capsys)
    (tmp_path / f"{1}.png").unlink()  # one tile is drawn as missing
    sheet = tmp_path / "sheets" / "b.jpg"
    assert main(["people", "show", gallery, person, "--annotate", str(sheet)]) == 0
    image = cv2.imread(str(sheet))
    assert image.shape == (112, 3 * 112, 3)
    assert main(["people", "check", gallery]) == 0 and "OK" in capsys.readouterr().out
    connection = sqlite3.connect(gallery, isolation_level=None)
    blob = bytearray(connection.execute("SELECT embedding FROM faces WHERE id = ?", (faces[1][0],)).fetchone()[0])
    blob[5] ^= 4
    connection.execute("UPDATE faces SET embedding = ? WHERE id = ?", (bytes(blob), faces[1][0]))
    connection.close()
    assert main(["people", "check", gallery]) == 2
    assert f"face {faces[1][0]} (" in (out := capsys.readouterr().out) and "gallery reembed" in out
    assert main(["people", "check", gallery, "--drop"]) == 2 and "dropped 1 damaged faces" in capsys.readouterr().out
    assert main(["people", "check", gallery]) == 0


def test_gallery_reembed_keeps_people_and_lists_a_deleted_photo(tmp_path: Path, shared_data: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from marginface.infer.people_scan import add_photos
    from marginface.infer.recognizer import FaceRecognizer

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in (1, 2):
        (photos / f"{i}.jpg").write_bytes(
            (shared_data / "lfw" / "lfw-deepfunneled" / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg").read_bytes())
    gallery = str(tmp_path / "g.db")
    models = ["--model", str(shared_data / MODEL), "--detector", str(shared_data / DETECTOR)]
    assert main(["gallery", "create", gallery, *models, "--threshold", "0.4"]) == 0
    with Gallery.open(gallery) as opened:
        people = People(opened)
        report = add_photos(people, FaceRecognizer.from_gallery(opened), [photos])
        mains = [f.id for f in people.faces() if f.face_index == 0]
        people.name(people.split(mains), "Colin")
    (photos / "2.jpg").unlink()
    capsys.readouterr()
    assert main(["gallery", "reembed", gallery, "--model", str(shared_data / MODEL), "--json"]) == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["faces"] == report.faces - len(result["missing"]) and result["templates"] == 1
    assert [Path(m["photo_path"]).name for m in result["missing"] if m["person"] == "Colin"] == ["2.jpg"]
    assert "faces could not be recomputed" in captured.err
    assert main(["people", "show", gallery, "Colin"]) == 0
    assert "photo missing at the last reembed" in capsys.readouterr().out
    assert main(["identify", gallery, str(photos / "1.jpg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"][0]["name"] == "Colin"


def test_cluster_scans_lfw_photos_into_one_cluster_per_person_then_names_new_photos(
        tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lfw = shared_data / "lfw" / "lfw-deepfunneled"
    names = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]
    first, later = tmp_path / "first", tmp_path / "later"
    for folder, numbers in ((first, range(1, 6)), (later, range(6, 8))):
        for name in names:
            (folder / name).mkdir(parents=True)
            for i in numbers:
                (folder / name / f"{i}.jpg").write_bytes((lfw / name / f"{name}_{i:04d}.jpg").read_bytes())
    gallery = str(tmp_path / "g.db")
    models = ["--model", str(shared_data / MODEL), "--detector", str(shared_data / DETECTOR)]
    assert main(["gallery", "create", gallery, *models, "--threshold", "0.45"]) == 0
    capsys.readouterr()
    sheets = tmp_path / "sheets"
    assert main(["cluster", gallery, str(first), "--threshold", "0.45", "--json", "--annotate", str(sheets)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scan"]["photos"] == 20 and report["mode"] == "incremental"
    with Gallery.open(gallery) as opened:
        people = People(opened)
        biggest: dict[str, object] = {}  # photo -> its largest face (the person the photo is of)
        for face in people.faces():
            if face.photo_path not in biggest or face.face_size > biggest[face.photo_path].face_size:
                biggest[face.photo_path] = face
    clusters: dict[str, set[str]] = {}
    for face in biggest.values():
        clusters.setdefault(Path(face.photo_path).parent.name, set()).add(face.person.ref)
    assert all(len(refs) == 1 for refs in clusters.values()), clusters  # each person's photos in one cluster
    assert len(set().union(*clusters.values())) == 4  # and four different clusters
    for refs in clusters.values():  # each person's contact sheet: a grid of 112-pixel tiles
        sheet = cv2.imread(str(sheets / f"cluster-{next(iter(refs)).removeprefix('@')}.jpg"))
        assert sheet is not None and sheet.shape[0] % 112 == 0 and sheet.shape[1] >= 5 * 112
    assert main(["people", "name", gallery, next(iter(clusters["Tony_Blair"])), "Tony"]) == 0
    capsys.readouterr()
    assert main(["cluster", gallery, str(later / "Tony_Blair"), "--json"]) == 0  # the stored cut
    report = json.loads(capsys.readouterr().out)
    assert report["to_named"] >= 2 and report["settings"]["threshold"]["value"] == pytest.approx(0.45)
    assert main(["identify", gallery, str(later / "Tony_Blair" / "7.jpg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"][0]["name"] == "Tony"


def test_cluster_refuses_a_min_size_out_of_range_before_scanning(db, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    gallery, _ = db
    assert main(["cluster", gallery, str(tmp_path), "--threshold", "0.5", "--min-size", "5000"]) == 2
    assert "--min-size is 5000; the smallest cluster kept must be a whole number of faces from 1 to 1000" in (
        capsys.readouterr().err)
    assert main(["cluster", gallery, "--threshold", "0.5", "--min-size", "1000"]) == 0
