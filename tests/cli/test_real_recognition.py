"""Proof on real data: a gallery enrolled through the CLI with eval's identification split reproduces
`marginface eval --identification` (rank-1, DIR at each FPIR) to the last digit, through `identify --json`
and through the HTTP service; photos with several faces come back with every face, the main one first.

MARGINFACE_TEST_MODEL=/path/model.onnx runs the same proof for another model (a fine-tuned one: docs/paper_ood.md).
ORL goes through CLI and HTTP; LFW through the CLI only, since a second pass of its photos through HTTP would
double this test's time and the HTTP route runs the same FaceRecognizer and Gallery calls (checked on ORL).
LFW is its identities with >= 10 images (all 158: 111 enrolled, 47 impostors), each with its first 12 photos
by name plus the photos of SEVERAL_FACES: 1,853 photos, 1,742 of them probes (552 impostors). Every photo of
those people (4,324) took 2.3 times as long and checks the same two paths against each other; the model's
figures on all of them are bench/results/lfw_mobilefacenet/report.json's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from marginface.cli import main
from marginface.eval.pipeline import IdentificationFiles, identification_files

# relative to the shared data folder unless absolute (pathlib keeps an absolute right-hand side as it is)
MODEL = os.environ.get("MARGINFACE_TEST_MODEL", "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx")
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"
SETS = {"att_faces": "orl_att_faces/att_faces", "lfw-deepfunneled": "lfw/lfw-deepfunneled"}
LFW_PHOTOS_PER_PERSON = 12
FPIR = 0.01  # the gallery's operating point; the other FPIRs of the report are checked from the scores
# LFW probe photos in which YuNet finds more than one face (found once by scanning probe photos offline);
# the person each photo is filed under is enrolled, so the main face must come back first and named.
SEVERAL_FACES = ["Condoleezza_Rice_0005.jpg", "Bill_Simon_0015.jpg", "George_W_Bush_0018.jpg",
                 "Alvaro_Uribe_0012.jpg", "Donald_Rumsfeld_0101.jpg", "Abdullah_Gul_0006.jpg"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run one `marginface` command in-process; its stdout."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def _link(target: Path, source: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)
    return target


def _split_folders(files: IdentificationFiles, root: Path) -> tuple[Path, Path, dict[str, str | None]]:
    """Folders of links to eval's split: enrol/<name>/<image>, probes/<image> (known and impostor photos),
    and the truth for every probe link (None for impostors)."""
    for name, paths in files.gallery:
        for path in paths:
            _link(root / "enrol" / name / path.name, path)
    truth: dict[str, str | None] = {}
    for name, path in files.probes:
        truth[str(_link(root / "probes" / "known" / name / path.name, path))] = name
    for name, path in files.unknown:
        truth[str(_link(root / "probes" / "unknown" / name / path.name, path))] = None
    return root / "enrol", root / "probes", truth


def _metrics(answers: dict[str, list[dict]], truth: dict[str, str | None], expected: dict) -> dict:
    """rank-1 and DIR / realised FPIR at each of the report's FPIR thresholds, from identify answers (main
    face first, score of the best identity, its name among the candidates)."""
    assert set(answers) == set(truth), "identify must answer every probe photo"
    assert all(answers[path] for path in truth), "every probe photo must have a face"
    known = [p for p, name in truth.items() if name is not None]
    unknown = [p for p, name in truth.items() if name is None]
    top = {p: answers[p][0]["candidates"][0] for p in truth}
    correct = [p for p in known if top[p]["name"] == truth[p]]
    out = {"rank1": len(correct) / len(known), "dir_at_fpir": {}, "fpir": {}}
    for key, threshold in expected["threshold_at_fpir"].items():
        out["dir_at_fpir"][key] = sum(top[p]["score"] >= threshold for p in correct) / len(known)
        out["fpir"][key] = sum(top[p]["score"] >= threshold for p in unknown) / len(unknown)
    return out


def _check_against_eval(found: dict, expected: dict, truth: dict[str, str | None]) -> None:
    """Equal to the last digit: rank-1 and DIR@FPIR; impostors accepted = exactly what eval's threshold allows."""
    assert found["rank1"] == expected["rank1"]
    assert found["dir_at_fpir"] == expected["dir_at_fpir"]
    impostors = sum(name is None for name in truth.values())
    for key, rate in found["fpir"].items():
        assert rate == math.floor(float(key) * impostors + 1e-9) / impostors


def _decisions(answers: dict[str, list[dict]], truth: dict[str, str | None]) -> tuple[float, int]:
    """(share of known probes whose main face is named correctly, impostor photos named as someone) under the
    gallery's own threshold: its decisions, not scores re-thresholded here."""
    known = [p for p, name in truth.items() if name is not None]
    named_right = sum(answers[p][0]["name"] == truth[p] for p in known) / len(known)
    false_accepts = sum(answers[p][0]["name"] != "unknown" for p, name in truth.items() if name is None)
    return named_right, false_accepts


@pytest.fixture(scope="module")
def set_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """set_folder(set_name) -> the identity folder both eval and the CLI run on: ORL as it is; for LFW a folder
    of links named like LFW's (the report's set name), its identities with >= 10 photos, each with its first
    LFW_PHOTOS_PER_PERSON photos and any of SEVERAL_FACES."""
    made: dict[str, Path] = {}

    def folder(set_name: str) -> Path:
        source = shared_data / SETS[set_name]
        if set_name != "lfw-deepfunneled":
            return source
        if set_name not in made:
            root = tmp_path_factory.mktemp("sets") / set_name
            for person in sorted(source.iterdir()):
                photos = sorted(person.glob("*.jpg"))
                if len(photos) >= 10:
                    kept = photos[:LFW_PHOTOS_PER_PERSON] + [p for p in photos if p.name in SEVERAL_FACES]
                    for photo in dict.fromkeys(kept):
                        _link(root / person.name / photo.name, photo)
            made[set_name] = root
        return made[set_name]

    return folder


@pytest.fixture(scope="module")
def eval_report(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, set_folder):
    """eval_report(set_name) -> (report path, its identification entry): `marginface eval --identification`
    on that set, the numbers to reproduce (run once per set)."""
    done: dict[str, tuple[Path, dict]] = {}

    def run(set_name: str) -> tuple[Path, dict]:
        if set_name not in done:
            out = tmp_path_factory.mktemp("eval")
            assert main([str(a) for a in ["eval", shared_data / MODEL, "--detector", shared_data / DETECTOR,
                                          "--identification", set_folder(set_name), "--out", out]]) == 0
            done[set_name] = out / "report.json", json.loads((out / "report.json").read_text())["identification"]
        return done[set_name]

    return run


def _gallery(capsys, shared_data: Path, tmp_path: Path, report: Path, set_name: str,
             folder: Path) -> tuple[Path, dict]:
    """A gallery calibrated at FPIR 0.01 on `set_name`, enrolled through the CLI with eval's split of `folder`."""
    files = identification_files(folder, min_images=10)
    enrol, probes, truth = _split_folders(files, tmp_path)
    gallery = tmp_path / "people.db"
    _cli(capsys, "gallery", "create", gallery, "--model", shared_data / MODEL, "--detector", shared_data / DETECTOR,
         "--report", report, "--fpir", FPIR, "--set", set_name)
    out = _cli(capsys, "enroll", gallery, enrol)
    assert f"for {len(files.gallery)} people" in out and "not enrolled" not in out
    return gallery, truth


def _identify_cli(capsys, gallery: Path, probes: Path) -> dict[str, list[dict]]:
    answers = json.loads(_cli(capsys, "identify", gallery, probes, "--json"))
    assert not [a for a in answers if "error" in a]
    return {a["image"]: a["faces"] for a in answers}


@pytest.mark.slow
def test_orl_cli_and_http_reproduce_eval(shared_data: Path, tmp_path: Path, eval_report, set_folder,
                                        capsys) -> None:
    from fastapi.testclient import TestClient

    from marginface.serve.app import create_app

    report, sets = eval_report("att_faces")
    expected = sets["att_faces"]
    gallery, truth = _gallery(capsys, shared_data, tmp_path, report, "att_faces", set_folder("att_faces"))

    cli = _identify_cli(capsys, gallery, tmp_path / "probes")
    _check_against_eval(_metrics(cli, truth, expected), expected, truth)

    with TestClient(create_app(gallery), base_url="http://127.0.0.1:8000") as client:
        http = {}
        for path in truth:
            response = client.post("/v1/identify", files={"image": (Path(path).name, Path(path).read_bytes())})
            assert response.status_code == 200, response.text
            http[path] = response.json()["faces"]
    _check_against_eval(_metrics(http, truth, expected), expected, truth)
    assert {p: [f["score"] for f in faces] for p, faces in http.items()} == \
        {p: [f["score"] for f in faces] for p, faces in cli.items()}

    named_right, false_accepts = _decisions(cli, truth)
    impostors = sum(name is None for name in truth.values())
    assert named_right == expected["dir_at_fpir"][f"{FPIR:g}"]
    assert false_accepts == math.floor(FPIR * impostors + 1e-9)
    assert _decisions(http, truth) == (named_right, false_accepts)


@pytest.mark.slow
def test_lfw_cli_reproduces_eval_and_finds_every_face(shared_data: Path, tmp_path: Path, eval_report, set_folder,
                                                     capsys) -> None:
    report, sets = eval_report("lfw-deepfunneled")
    expected = sets["lfw-deepfunneled"]
    gallery, truth = _gallery(capsys, shared_data, tmp_path, report, "lfw-deepfunneled", set_folder("lfw-deepfunneled"))
    assert (len(truth), sum(name is None for name in truth.values())) == (1742, 552)  # the module docstring's
    cli = _identify_cli(capsys, gallery, tmp_path / "probes")
    _check_against_eval(_metrics(cli, truth, expected), expected, truth)
    named_right, false_accepts = _decisions(cli, truth)
    impostors = sum(name is None for name in truth.values())
    assert named_right == expected["dir_at_fpir"][f"{FPIR:g}"]
    assert false_accepts == math.floor(FPIR * impostors + 1e-9)

    by_name = {Path(path).name: (path, name) for path, name in truth.items()}
    for file_name in SEVERAL_FACES:
        path, person = by_name[file_name]
        faces = cli[path]
        assert len(faces) >= 2, f"{file_name}: expected several faces, got {len(faces)}"
        assert faces[0]["name"] == person, f"{file_name}: main face named {faces[0]['name']}, not {person}"
        assert all(face["name"] != person for face in faces[1:]), f"{file_name}: {person} named twice"
