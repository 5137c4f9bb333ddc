"""Hostile-user probes through the real command line (issue 9): each bad input ends in seconds, within a
memory limit, with exit status 2 and one `marginface: error:` line naming the file or key, no traceback,
and whatever was written before is still there."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from marginface.backbones import get_backbone
from marginface.backbones import save as save_model
from marginface.data.synthetic import synthetic_face
from marginface.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

from ..conftest import REPO_ROOT
from ..train.helpers import TINY

MEMORY_LIMIT = 3 << 30  # address space per process: a probe that tries to allocate its way out fails instead


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _cli(*args: str, timeout: float = 90, torchrun: bool = False) -> subprocess.CompletedProcess:
    """Run `marginface ARGS` (or under torchrun with 2 processes) with a time and a memory limit."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun else []
    return subprocess.run([sys.executable, *launcher, "-m", "marginface", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), preexec_fn=_limit_memory)


def _one_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """The single error line of a run that failed as a user error should: status 2, no traceback."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("marginface: error:")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _train_args(run: Path, *extra: str) -> list[str]:
    return ["train", *sum((["--set", s] for s in TINY), []), "--set", f"output_dir={run}", *extra]


def _tiny_model(folder: Path, zero: bool = False) -> Path:
    kwargs = {"scale": 1, "blocks": [1, 1, 1, 1]}
    model = get_backbone("mbf", num_features=16, **kwargs)
    if zero:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    return save_model(model.eval(), "mbf", folder, **kwargs)


def _pairs(root: Path, size: int = 112) -> Path:
    """A 2-fold LFW-style pairs.txt over 3 people, images of `size` x `size`."""
    for identity, person in enumerate(("ann", "bob", "cy")):
        (root / person).mkdir(parents=True, exist_ok=True)
        for i in (1, 2):
            face = cv2.resize(synthetic_face(3, identity, i), (size, size))
            cv2.imwrite(str(root / person / f"{person}_{i:04d}.jpg"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    lines = ["2 1", "ann 1 2", "ann 1 bob 1", "bob 1 2", "bob 2 cy 1"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "pairs.txt"


# --------------------------------------------------------------------------- configuration values
def test_set_with_yaml_tag_names_the_key(tmp_path: Path) -> None:
    done = _cli(*_train_args(tmp_path / "run", "--set", "optim.lr=!!python/object/apply:os.system [echo owned]"))
    _one_error(done, "--set optim.lr", "YAML tags are not allowed")
    assert "owned" not in done.stdout and not (tmp_path / "run").exists()


def test_set_with_unbalanced_brackets_names_the_key(tmp_path: Path) -> None:
    _one_error(_cli(*_train_args(tmp_path / "run", "--set", "model.kwargs={scale: [1, 2}")), "--set model.kwargs")


def test_exponent_numbers_work_and_absurd_lr_stops_with_the_nan_guard(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("optim:\n  weight_decay: 5e-4\n  momentum: 9E-1\n")  # YAML 1.1 would read strings
    run = tmp_path / "run"
    done = _cli("train", str(config), *_train_args(run, "--set", "optim.lr=1e30", "--set", "optim.max_steps=30",
                                                   "--set", "optim.nan_patience=2", "--set", "checkpoint_every=1")[1:])
    _one_error(done, "non-finite steps in a row", "last good checkpoint")  # within _cli's timeout (a hang guard)
    assert "non-finite embedding, step skipped" in done.stderr  # caught before the head, not by its input check
    resolved = (run / "config.yaml").read_text()
    assert "weight_decay: 0.0005" in resolved and "lr: 1.0e+30" in resolved
    weights, _, _ = load_checkpoint(list_checkpoints(run)[-1].path)  # the oldest kept checkpoint: before the NaN
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


# --------------------------------------------------------------------------- model and detector files
@pytest.mark.parametrize("content", [b"this is not a model\n", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94."],
                         ids=["text", "pickle"])
def test_invalid_onnx_file_is_one_error_and_earlier_report_survives(tmp_path: Path, content: bytes) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text('{"earlier": true}\n')
    _one_error(_cli("eval", str(model), "--synthetic", "--out", str(out)), str(model), "not a valid ONNX model")
    assert json.loads((out / "report.json").read_text()) == {"earlier": True}


def test_detector_that_is_not_yunet(tmp_path: Path, shared_data: Path) -> None:
    recognizer = shared_data / "face_recognition_mobilefacenet" / "mobilefacenet_dynamic_batch.onnx"
    done = _cli("eval", str(_tiny_model(tmp_path / "model")), "--synthetic", "--detector", str(recognizer))
    _one_error(done, str(recognizer), "is not a YuNet face detector")


# --------------------------------------------------------------------------- outputs and disks
def test_eval_out_not_writable_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me\n")
    done = _cli("eval", str(_tiny_model(tmp_path / "model")), "--synthetic", "--out", str(blocker / "out"))
    _one_error(done, f"{blocker / 'out'} is not writable")
    assert "accuracy" not in done.stdout  # refused before the evaluation ran (no figures printed)
    assert blocker.read_text() == "keep me\n"


def test_train_output_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_error(_cli(*_train_args(blocker / "run")), "output_dir", f"{blocker / 'run'} is not writable")


def test_resume_auto_refuses_when_every_checkpoint_is_unusable(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (2, 4):
        save_checkpoint(run, step, {"w": torch.zeros(2)}, {"step": step}, keep=5)
    (run / "checkpoints" / "step-00000004" / "state.pt").write_bytes(b"garbage")
    (run / "checkpoints" / "step-00000002" / "meta.json").unlink()
    line = _one_error(_cli(*_train_args(run, "--resume", "auto")), "no usable checkpoint",
                      "step-00000004: state.pt does not match its checksum", "step-00000002: no readable meta.json",
                      "--resume none")
    assert "starting from scratch" not in line
    assert [c.step for c in list_checkpoints(run)] == [4, 2]  # nothing deleted: the user decides


def test_full_disk_during_checkpoint_removes_the_partial_copy(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    try:
        done = _cli(*_train_args(disk / "run", "--set", "optim.max_steps=2", "--set", "checkpoint_every=1"))
        _one_error(done, "No space left on device")
        assert (disk / "run" / "config.yaml").is_file()  # written before the failure, still intact
        assert not list((disk / "run" / "checkpoints").glob("*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# --------------------------------------------------------------------------- degenerate results
def test_zero_embeddings_are_flagged_in_console_and_report(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path / "faces")
    out = tmp_path / "report"
    done = _cli("eval", str(_tiny_model(tmp_path / "model", zero=True)), "--pairs", str(pairs),
                str(tmp_path / "faces"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "marginface: warning: faces: every embedding is zero" in done.stderr
    report = json.loads((out / "report.json").read_text())
    assert any("every embedding is zero" in w for w in report["verification"][0]["warnings"])


def test_photos_without_a_face_are_listed_and_warned(tmp_path: Path, shared_data: Path) -> None:
    pairs = _pairs(tmp_path / "faces", size=150)  # synthetic drawings: YuNet finds no face in them
    out = tmp_path / "report"
    detector = shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx"
    done = _cli("eval", str(_tiny_model(tmp_path / "model")), "--pairs", str(pairs), str(tmp_path / "faces"),
                "--detector", str(detector), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "were centre-cropped because no face was found" in done.stderr
    entry = json.loads((out / "report.json").read_text())["verification"][0]
    assert entry["fallback_crops"] == len(entry["no_face"]) > 0
    assert all(Path(name).is_file() for name in entry["no_face"])


# --------------------------------------------------------------------------- two processes
def _rank_errors(stderr: str) -> list[str]:
    """The `marginface: error:` lines of a torchrun's ranks. They share stderr, so one rank's progress bar (no
    newline yet) can precede another's error on the same line: each is taken from where the error starts."""
    return [line[line.index("marginface: error:"):] for line in stderr.splitlines() if "marginface: error:" in line]


@pytest.mark.slow
def test_torchrun_nonfinite_embeddings_stop_every_rank_without_hanging(tmp_path: Path) -> None:
    done = _cli(*_train_args(tmp_path / "run", "--set", "optim.lr=1e30", "--set", "optim.max_steps=30",
                             "--set", "optim.nan_patience=2"), torchrun=True, timeout=180)  # a hang raises here
    assert done.returncode != 0
    errors = _rank_errors(done.stderr)
    # both ranks agree and stop at the same step (torchrun may end the second before it prints)
    assert errors and all("non-finite steps in a row" in line for line in errors), done.stderr[-3000:]
    assert all(line.split(":")[2].strip() in ("rank 0 of 2", "rank 1 of 2") for line in errors)
    # (torchrun's launcher prints its own ChildFailedError traceback after the ranks end; ours print none)
    assert "marginface/train/trainer.py" not in done.stderr


@pytest.mark.slow
def test_torchrun_one_rank_failing_ends_the_run_with_its_message(tmp_path: Path) -> None:
    from ..data.helpers import write_identity_folder

    folder = write_identity_folder(tmp_path / "faces", identities=3, per_identity=4)
    (folder / "id_01" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    done = _cli(*_train_args(tmp_path / "run", "--set", "data.kind=folder", "--set", f"data.path={folder}",
                             "--set", "data.on_error=raise", "--set", "optim.max_steps=40"),
                torchrun=True, timeout=180)  # a hang raises here; the gloo collectives' own timeout is 30 minutes
    assert done.returncode != 0
    failing = [line for line in _rank_errors(done.stderr) if "broken.png: cannot decode image" in line]
    assert len(failing) == 1 and "Traceback" not in failing[0], done.stderr[-3000:]


# --------------------------------------------------------------------------- -v shows the traceback
def test_verbose_adds_the_traceback_to_the_one_line(capsys: pytest.CaptureFixture[str], caplog) -> None:
    from marginface.cli import main

    assert main(["-v", "train", "--set", "optim.lr=[1"]) == 2
    assert capsys.readouterr().err.startswith("marginface: error: --set optim.lr: cannot read value '[1'")
    assert "Traceback" in caplog.text and "ParserError" in caplog.text
