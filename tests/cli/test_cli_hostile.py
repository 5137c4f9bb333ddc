"""Issue 16's hostile probes through the command line, in process: one `marginface: error:` line, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from marginface.cli import main

MODEL = "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"


def _photo(shared_data: Path) -> Path:
    return shared_data / "lfw" / "lfw-deepfunneled" / "Colin_Powell" / "Colin_Powell_0001.jpg"


def _one_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("marginface: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_verify_with_an_elongated_image_is_one_error_line(tmp_path: Path, shared_data: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    line = tmp_path / "line.png"
    Image.new("RGB", (1, 20_000)).save(line)
    args = ["--model", str(shared_data / MODEL), "--detector", str(shared_data / DETECTOR), "--threshold", "0.3"]
    assert main(["verify", str(_photo(shared_data)), str(line), *args]) == 2
    _one_error(capsys, f"{line}: image of 1x20000 pixels is too elongated")


def test_gallery_list_on_a_damaged_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from marginface.infer.gallery import Gallery
    from marginface.infer.thresholds import Threshold
    from tests.infer.test_gallery import FP, _damage_pages_of, _face, _unit

    path = tmp_path / "g.db"
    with Gallery.create(path, FP, Threshold.fixed(0.5), model=tmp_path / "m.onnx", detector=None) as gallery:
        gallery.enroll("ann", [(_face(_unit(1, 0, 0, 0, 0, 0, 0, 0)), "a1")], FP)
    _damage_pages_of(path, "templates_identity")
    assert main(["gallery", "list", str(path)]) == 2
    _one_error(capsys, f"{path}: cannot read the gallery (database disk image is malformed)")


@pytest.mark.parametrize("command", ["verify", "gallery create"])
def test_the_detector_given_as_the_embedding_model_is_refused(tmp_path: Path, shared_data: Path, command: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The probes: `verify --model <YuNet>` was a TypeError traceback; `gallery create --model <YuNet>` made a
    gallery that every `enroll` then crashed on."""
    detector = str(shared_data / DETECTOR)
    args = ["--model", detector, "--detector", detector, "--threshold", "0.3"]
    photo = str(_photo(shared_data))
    target = [photo, photo] if command == "verify" else [str(tmp_path / "g.db")]
    assert main([*command.split(), *target, *args]) == 2
    _one_error(capsys, f"{detector}: not an image -> embedding model", "cls_8 [1, 6400, 1]")
    assert not (tmp_path / "g.db").exists()


def test_enrolling_a_photo_already_enrolled_as_someone_else_is_refused(tmp_path: Path, shared_data: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    db, photo = str(tmp_path / "g.db"), str(_photo(shared_data))
    models = ["--model", str(shared_data / MODEL), "--detector", str(shared_data / DETECTOR)]
    assert main(["gallery", "create", db, *models, "--threshold", "0.3"]) == 0
    assert main(["enroll", db, "--name", "Colin", photo]) == 0
    capsys.readouterr()
    assert main(["enroll", db, "--name", "Mallory", photo]) == 2
    _one_error(capsys, f"{photo} (sha256", "already enrolled as 'Colin'")
    assert main(["enroll", db, "--name", "Mallory", photo, "--allow-shared-photo"]) == 0


def test_verify_with_a_fifo_names_it(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    args = ["--model", str(shared_data / MODEL), "--detector", str(shared_data / DETECTOR), "--threshold", "0.3"]
    assert main(["verify", str(_photo(shared_data)), str(fifo), *args]) == 2
    _one_error(capsys, f"{fifo}: is a FIFO (named pipe), not an image file")


def test_a_failed_enroll_says_how_many_people_were_committed(tmp_path: Path, shared_data: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The probe: an enrolment that stopped half-way said only why, not what it had already committed."""
    db = str(tmp_path / "g.db")
    models = ["--model", str(shared_data / MODEL), "--detector", str(shared_data / DETECTOR)]
    assert main(["gallery", "create", db, *models, "--threshold", "0.3"]) == 0
    assert main(["enroll", db, "--name", "Colin", str(_photo(shared_data))]) == 0
    folder = tmp_path / "people"
    lfw = shared_data / "lfw" / "lfw-deepfunneled"
    for person, photo in (("Ann", lfw / "Tony_Blair" / "Tony_Blair_0001.jpg"), ("Bob", _photo(shared_data)),
                          ("Cy", lfw / "George_W_Bush" / "George_W_Bush_0001.jpg")):
        (folder / person).mkdir(parents=True)
        (folder / person / "1.jpg").write_bytes(photo.read_bytes())  # Bob's photo is Colin's
    capsys.readouterr()
    assert main(["enroll", db, str(folder)]) == 2
    _one_error(capsys, "already enrolled as 'Colin'", "enroll stopped at 'Bob': 1 people (1 new templates) were "
               "committed before it, 'Bob' and the 1 after it were not")
    assert main(["gallery", "list", db]) == 0
    assert capsys.readouterr().out.split() == ["Ann", "1", "Colin", "1"]
