"""verify / gallery / enroll / identify on real LFW photos, and a gallery that survives kill -9 mid-enrolment."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from marginface.cli import main
from tests.conftest import REPO_ROOT

MODEL = "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"
PEOPLE = ["Colin_Powell", "George_W_Bush", "Tony_Blair"]


def lfw(shared_data: Path, name: str, i: int) -> Path:
    return shared_data / "lfw" / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg"


def models(shared_data: Path) -> list[str]:
    return ["--model", str(shared_data / MODEL), "--detector", str(shared_data / DETECTOR)]


@pytest.fixture()
def people(tmp_path: Path, shared_data: Path) -> Path:
    """people/<name>/ with two LFW photos each, plus a photo without a face in one of them."""
    root = tmp_path / "people"
    for name in PEOPLE:
        (root / name).mkdir(parents=True)
        for i in (1, 2):
            (root / name / f"{i}.jpg").write_bytes(lfw(shared_data, name, i).read_bytes())
    cv2.imwrite(str(root / "Tony_Blair" / "wall.png"), np.full((120, 160, 3), 200, np.uint8))
    return root


def test_enroll_identify_and_manage_a_gallery(tmp_path: Path, shared_data: Path, people: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "g.db")
    assert main(["gallery", "create", db, *models(shared_data), "--threshold", "0.4"]) == 0
    assert "threshold 0.4000 (fixed)" in capsys.readouterr().out
    assert main(["enroll", db, str(people)]) == 0
    out = capsys.readouterr().out
    assert "enrolled 6 new templates for 3 people" in out
    assert "1 not enrolled" in out and "wall.png: no face found" in out  # listed, not dropped
    assert main(["enroll", db, "--name", "Aaron", str(lfw(shared_data, "Aaron_Eckhart", 1))]) == 0
    assert "enrolled 1 new templates for 1 people" in capsys.readouterr().out
    assert main(["enroll", db, "--name", "Aaron", str(lfw(shared_data, "Aaron_Eckhart", 1))]) == 0
    assert "enrolled 0 new templates for 1 people" in (out := capsys.readouterr().out)
    assert "1 already in the gallery from the same image" in out
    assert main(["enroll", db, "--name", "aaron", str(lfw(shared_data, "Aaron_Eckhart", 1))]) == 2
    err = capsys.readouterr().err
    assert "'aaron' reads the same as the existing person 'Aaron' (case, spacing" in err
    assert "enrol them under the existing spelling 'Aaron'" in err and "(nothing was enrolled)" in err
    assert main(["enroll", db, "--name", "", str(lfw(shared_data, "Aaron_Eckhart", 1))]) == 2
    assert "identity name" in capsys.readouterr().err

    probe = lfw(shared_data, "Colin_Powell", 10)  # Powell plus two other people
    stranger = lfw(shared_data, "Aaron_Peirsol", 1)
    assert main(["identify", db, str(probe), str(stranger), "--json", "--k", "2",
                 "--annotate", str(tmp_path / "ann")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(probe), str(stranger)]
    powell, peirsol = results
    assert len(powell["faces"]) >= 2 and powell["faces"][0]["name"] == "Colin_Powell"
    assert all(f["name"] == "unknown" for f in powell["faces"][1:])
    first = powell["faces"][0]
    assert first["score"] >= 0.4 and len(first["box"]) == 4 and len(first["candidates"]) == 2
    assert first["threshold"] == {"value": 0.4, "source": "fixed"}
    assert [f["name"] for f in peirsol["faces"]] == ["unknown"]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["Aaron_Peirsol_0001.jpg", "Colin_Powell_0010.jpg"]

    assert main(["gallery", "rename", db, "Aaron", "Aaron_Eckhart"]) == 0
    assert main(["gallery", "remove", db, "Tony_Blair"]) == 0
    capsys.readouterr()
    assert main(["gallery", "list", db, "--json"]) == 0
    listed = {p["name"]: p["templates"] for p in json.loads(capsys.readouterr().out)}
    assert listed == {"Aaron_Eckhart": 1, "Colin_Powell": 2, "George_W_Bush": 2}
    assert main(["gallery", "stats", db]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["identities"], stats["templates"]) == (3, 5)
    assert main(["gallery", "remove", db, "Nobody"]) == 2
    assert "marginface: error: gallery" in capsys.readouterr().err


def test_verify_exit_status_and_threshold_source(shared_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = lfw(shared_data, "George_W_Bush", 1), lfw(shared_data, "George_W_Bush", 2), lfw(shared_data,
                                                                                            "Tony_Blair", 1)
    assert main(["verify", str(a), str(b), *models(shared_data), "--threshold", "0.35"]) == 0
    assert "same person (threshold 0.3500, fixed)" in capsys.readouterr().out
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"verification": [{"name": "lfw", "threshold_at_far": {"0.001": 0.5}}]}))
    assert main(["verify", str(a), str(c), *models(shared_data), "--report", str(report), "--far", "1e-3",
                 "--json"]) == 1
    decision = json.loads(capsys.readouterr().out)
    assert decision["same"] is False and decision["threshold"]["source"] == f"report {report}: lfw FAR 0.001"


def test_no_guessed_threshold_for_other_models(shared_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    a = str(lfw(shared_data, "George_W_Bush", 1))
    assert main(["verify", a, a, *models(shared_data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marginface: error: no threshold for model") and err.count("\n") == 1
    assert main(["gallery", "create", str(tmp_path / "g.db"), *models(shared_data)]) == 2
    assert not (tmp_path / "g.db").exists()
    assert main(["verify", a, "/nonexistent.jpg", *models(shared_data), "--threshold", "0.3"]) == 2
    assert "/nonexistent.jpg: no such image file" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_during_enrolment_keeps_every_committed_identity(tmp_path: Path, shared_data: Path) -> None:
    # 40 people: enroll scans everyone's images in batches of 32 and commits people as their images come back,
    # so the kill lands in a burst of commits with later batches still to come
    folders = sorted((shared_data / "lfw" / "lfw-deepfunneled").iterdir())
    names = [folder.name for folder in folders if (folder / f"{folder.name}_0003.jpg").is_file()][:40]
    root = tmp_path / "people"
    for name in names:
        (root / name).mkdir(parents=True)
        for i in (1, 2, 3):
            (root / name / f"{i}.jpg").write_bytes(lfw(shared_data, name, i).read_bytes())
    db = tmp_path / "g.db"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    command = [sys.executable, "-m", "marginface"]
    subprocess.run([*command, "gallery", "create", str(db), *models(shared_data), "--threshold", "0.4"],
                   env=env, check=True, capture_output=True)
    process = subprocess.Popen([*command, "enroll", str(db), str(root)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    watcher = sqlite3.connect(db, timeout=30)
    deadline = time.monotonic() + 120
    while watcher.execute("SELECT COUNT(*) FROM identities").fetchone()[0] < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "enrolment made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    watcher.close()

    db_check = sqlite3.connect(db)
    assert db_check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db_check.execute("SELECT i.name, COUNT(t.id) FROM identities i LEFT JOIN templates t "
                            "ON t.identity_id = i.id GROUP BY i.id ORDER BY i.name").fetchall()
    db_check.close()
    enrolled = [name for name, _ in rows]
    assert 2 <= len(enrolled) < len(names), "the kill should land mid-folder"
    assert enrolled == names[:len(enrolled)]  # people are committed in order, none skipped
    assert all(count == 3 for _, count in rows)  # nobody half-written

    from marginface.infer.gallery import Gallery

    with Gallery.open(db) as gallery:  # opens, and search sees exactly the committed people
        assert [i.name for i in gallery.identities()] == enrolled and gallery.stats()["templates"] == 3 * len(rows)


def test_auto_gallery_uses_the_shipped_identify_threshold(shared_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MARGINFACE_MODEL_MIRROR", shared_data.as_uri())  # file://, never the network
    monkeypatch.setenv("MARGINFACE_CACHE", str(tmp_path / "cache"))
    assert main(["gallery", "create", str(tmp_path / "g.db")]) == 0
    assert "lfw-deepfunneled FPIR 0.01" in capsys.readouterr().out
    assert main(["gallery", "stats", str(tmp_path / "g.db")]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["model"] == str(tmp_path / "cache" / "mobilefacenet.onnx")  # the published name, mirror or not
    assert stats["threshold"]["value"] == pytest.approx(0.4442375006024382)


def test_unreadable_inputs_and_bad_options_are_reported(tmp_path: Path, shared_data: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "g.db")
    assert main(["gallery", "create", db, *models(shared_data), "--threshold", "0.4"]) == 0
    (tmp_path / "people" / "Empty_Person").mkdir(parents=True)
    capsys.readouterr()
    assert main(["enroll", db, str(tmp_path / "people")]) == 0
    assert "Empty_Person: no images to enrol" in capsys.readouterr().out  # listed, not skipped silently
    photo = str(lfw(shared_data, "Colin_Powell", 1))
    assert main(["identify", db, photo, str(tmp_path / "missing.jpg"), "--json"]) == 2
    captured = capsys.readouterr()
    assert [bool(r.get("error")) for r in json.loads(captured.out)] == [False, True]
    assert "marginface: error: 1 of 2 images could not be read" in captured.err
    with pytest.raises(SystemExit) as exc:
        main(["identify", db, photo, "--k", "0"])
    assert exc.value.code == 2 and "expected an integer >= 1" in capsys.readouterr().err
    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert main(["identify", db, photo, "--annotate", str(tmp_path / "ann")]) == 2
    assert "cannot write the annotated copy" in capsys.readouterr().err


def test_workers_give_the_same_enrolment_and_answers(tmp_path: Path, shared_data: Path, people: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from marginface.infer.recognizer import FaceRecognizer

    scan_parallel = FaceRecognizer._scan_parallel
    parallel_runs: list[int] = []

    def counted(self, files, progress, workers, *rest):
        parallel_runs.append(workers)
        yield from scan_parallel(self, files, progress, workers, *rest)

    monkeypatch.setattr(FaceRecognizer, "_scan_parallel", counted)
    answers = []
    for workers in ("1", "3"):
        db = str(tmp_path / f"g{workers}.db")
        assert main(["gallery", "create", db, *models(shared_data), "--threshold", "0.4"]) == 0
        assert main(["enroll", db, str(people), "--workers", workers]) == 0
        assert "enrolled 6 new templates for 3 people" in capsys.readouterr().out
        photos = [str(lfw(shared_data, name, 3)) for name in PEOPLE] + [str(people / "Tony_Blair")]
        assert main(["identify", db, *photos, "--json", "--workers", workers]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert [[f["name"] for f in item["faces"]] for item in answers[1]] == \
        [[f["name"] for f in item["faces"]] for item in answers[0]]
    assert [item["image"] for item in answers[1]] == [item["image"] for item in answers[0]]
    assert parallel_runs == [3, 3]  # enroll and identify with --workers 3 ran three workers; --workers 1 none
    for a, b in zip(answers[0], answers[1], strict=True):
        assert [f["score"] for f in b["faces"]] == pytest.approx([f["score"] for f in a["faces"]], abs=1e-6)
    with pytest.raises(SystemExit) as exc:
        main(["identify", str(tmp_path / "g1.db"), photos[0], "--workers", "0"])
    assert exc.value.code == 2 and "expected an integer >= 1" in capsys.readouterr().err


def test_enroll_checks_every_name_first_lists_loose_photos_and_fails_on_unreadable_images(
        tmp_path: Path, shared_data: Path, people: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "g.db")
    assert main(["gallery", "create", db, *models(shared_data), "--threshold", "0.4"]) == 0
    (people / "bad\tname").mkdir()
    assert main(["enroll", db, str(people)]) == 2
    assert "holds control characters" in (err := capsys.readouterr().err) and "nothing was enrolled" in err
    assert main(["gallery", "list", db]) == 0 and "Colin_Powell" not in capsys.readouterr().out  # nothing enrolled
    (people / "bad\tname").rmdir()
    (people / "loose.jpg").write_bytes(lfw(shared_data, "Aaron_Eckhart", 1).read_bytes())
    (people / "Tony_Blair" / "broken.jpg").write_bytes(b"not a photo")
    assert main(["enroll", db, str(people)]) == 2
    captured = capsys.readouterr()
    assert "enrolled 6 new templates for 3 people" in captured.out
    assert "loose.jpg: not in a person's sub-folder" in captured.out
    assert captured.out.count("broken.jpg") == 1 and "1 of 8 images could not be read" in captured.err


def test_enrol_refuses_look_alike_folders_before_enrolling_anyone(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before the model is loaded (the gallery's model file does not even exist here)."""
    from marginface.infer.faces import ModelFingerprint
    from marginface.infer.gallery import Gallery
    from marginface.infer.thresholds import Threshold

    db = tmp_path / "g.db"
    fingerprint = ModelFingerprint("e" * 64, 112, "NCHW", "RGB", 127.5, 127.5, 4)
    with Gallery.create(db, fingerprint, Threshold.fixed(0.5), model=tmp_path / "absent.onnx", detector=None) as g:
        g.add("Bob", np.eye(4, dtype=np.float32)[0], fingerprint=fingerprint, source_sha256="bob-1")
    root = tmp_path / "people"
    for folder in ("Ada", "alice", "Alice"):
        (root / folder).mkdir(parents=True)
        (root / folder / "1.jpg").write_bytes(b"not read")
    assert main(["enrol", str(db), str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the folders 'Alice' and 'alice' name people whose names read the same (case" in err
    (root / "Alice" / "1.jpg").unlink()
    (root / "Alice").rmdir()
    (root / "bob").mkdir()
    (root / "bob" / "1.jpg").write_bytes(b"not read")
    assert main(["enrol", str(db), str(root)]) == 2  # Ada and alice come before bob: neither is enrolled
    err = capsys.readouterr().err
    assert f"{root / 'bob'}: gallery {db}: 'bob' reads the same as the existing person 'Bob' (case" in err
    assert "nothing was enrolled" in err and err.count("\n") == 1
    assert main(["gallery", "list", str(db), "--json"]) == 0
    assert [i["name"] for i in json.loads(capsys.readouterr().out)] == ["Bob"]


def test_a_damaged_template_stops_identify_and_gallery_check_finds_and_drops_it(
        tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The probe: one flipped exponent bit in one stored float named strangers as that person (score ~5e36)."""
    db = str(tmp_path / "g.db")
    assert main(["gallery", "create", db, *models(shared_data), "--threshold", "0.4"]) == 0
    assert main(["enroll", db, "--name", "Colin", str(lfw(shared_data, "Colin_Powell", 1)),
                 str(lfw(shared_data, "Colin_Powell", 2))]) == 0
    assert main(["gallery", "check", db]) == 0
    assert "2 templates of 1 identities checked" in (out := capsys.readouterr().out) and "OK" in out
    connection = sqlite3.connect(db, isolation_level=None)
    blob = bytearray(connection.execute("SELECT embedding FROM templates WHERE id = 2").fetchone()[0])
    exponent = next(i for i in range(3, len(blob), 4) if blob[i] & 0x7F not in (0, 0x7F) and not blob[i] & 0x40)
    blob[exponent] |= 0x40  # one bit: that float becomes ~1e38 times larger, still finite
    connection.execute("UPDATE templates SET embedding = ? WHERE id = 2", (bytes(blob),))
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()
    stranger = str(lfw(shared_data, "Tony_Blair", 1))
    assert main(["identify", db, stranger]) == 2
    captured = capsys.readouterr()
    assert "Colin" not in captured.out  # no decision printed
    assert f"gallery {db} holds 1 damaged template(s)" in captured.err and "template 2 of 'Colin'" in captured.err
    assert main(["gallery", "check", db]) == 2
    out = capsys.readouterr().out
    assert "1 damaged templates" in out and "template 2 of 'Colin': has norm" in out and "--drop" in out
    assert main(["gallery", "check", db, "--drop"]) == 2
    assert "dropped 1 damaged templates; enrol again: Colin" in capsys.readouterr().out
    assert main(["gallery", "check", db]) == 0
    assert "1 templates of 1 identities checked" in capsys.readouterr().out
    assert main(["identify", db, "--json", stranger]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"][0]["name"] == "unknown"


def test_enrol_follows_the_one_policy_for_photos_without_a_face(tmp_path: Path, shared_data: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """docs/recognition.md, as POST /v1/identities: a faceless photo is skipped and listed, the person enrolled from
    the others; a person none of whose photos shows a face is not enrolled. `enroll` is the same command."""
    db = str(tmp_path / "g.db")
    assert main(["gallery", "create", db, *models(shared_data), "--threshold", "0.4"]) == 0
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((120, 160, 3), 200, np.uint8))
    capsys.readouterr()
    assert main(["enrol", db, "--name", "Nobody", str(wall)]) == 0
    out = capsys.readouterr().out
    assert "enrolled 0 new templates for 0 people" in out and f"{wall}: no face found" in out
    assert main(["enroll", db, "--name", "Colin", str(wall), str(lfw(shared_data, "Colin_Powell", 1))]) == 0
    out = capsys.readouterr().out
    assert "enrolled 1 new templates for 1 people" in out and "1 not enrolled" in out and f"{wall}: no face" in out
    assert main(["gallery", "list", db, "--json"]) == 0
    assert [(p["name"], p["templates"]) for p in json.loads(capsys.readouterr().out)] == [("Colin", 1)]
