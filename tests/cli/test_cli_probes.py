"""Hostile-user probes through the real command line (issue 9): each bad input ends in seconds, within a
memory limit, with exit status 2 and one `marginface: error:` line naming the file or key, no traceback,
and whatever was written before is still there.

The single-process probes run in ONE child process (torch is imported once, as in test_cli_data_reliability.py)
under the memory limit: the child runs `marginface.cli.main(argv)` for each, its stdout and stderr captured
(logging re-pointed at each probe's stderr, as in a process of its own), and reports exit status, output and
seconds. A real `python -m marginface` process of its own is kept where the process is the point: the full
disk, and the two torchrun probes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest
import torch

from marginface.backbones import get_backbone
from marginface.backbones import save as save_model
from marginface.data.synthetic import synthetic_face
from marginface.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

from ..conftest import REPO_ROOT, shared_data_dir
from ..train.helpers import TINY

MEMORY_LIMIT = 3 << 30  # address space per process: a probe that tries to allocate its way out fails instead
PROBE_SECONDS = 90  # each probe; a probe that hangs is stopped by the child's timeout (PROBE_SECONDS * 4)
RECOGNIZER = "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = "face_detection_yunet/face_detection_yunet_2023mar.onnx"
ONNX_CONTENT = {"text": b"this is not a model\n", "pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94."}

DRIVER = r"""
import contextlib, io, json, logging, resource, sys, time, traceback
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from marginface.cli import main
for name, argv in json.load(sys.stdin).items():
    logging.root.handlers.clear()  # main's basicConfig then logs to this probe's stderr, as in its own process
    out, err, start = io.StringIO(), io.StringIO(), time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse, as `python -m marginface` would exit
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # what the command let through: Python would print it and exit 1
            traceback.print_exc()
            status = 1
    result = {"returncode": status, "stdout": out.getvalue(), "stderr": err.getvalue(),
              "seconds": time.perf_counter() - start}
    print("\n" + json.dumps({name: result}), flush=True)  # on a line of its own: a shell a probe ran may print
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _cli(*args: str, timeout: float = PROBE_SECONDS, torchrun: bool = False) -> subprocess.CompletedProcess:
    """Run `marginface ARGS` in a process of its own (or under torchrun with 2 processes) with a time and a
    memory limit."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun else []
    return subprocess.run([sys.executable, *launcher, "-m", "marginface", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), preexec_fn=_limit_memory)


def _one_error(done, *fragments: str) -> str:
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


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Every single-process probe's inputs, made here, then one child runs them all: `results[name]` has the
    probe's returncode, stdout, stderr and seconds; `root[name]` is the folder its inputs lie in; `stdout` is
    what else the child printed (where anything a probe ran through a shell would have printed)."""
    base = tmp_path_factory.mktemp("probes")
    root = {}
    argv: dict[str, list[str]] = {}

    def folder(name: str) -> Path:
        root[name] = base / name
        root[name].mkdir()
        return root[name]

    tag = folder("yaml_tag")
    argv["yaml_tag"] = _train_args(tag / "run", "--set", "optim.lr=!!python/object/apply:os.system [echo owned]")
    argv["brackets"] = _train_args(folder("brackets") / "run", "--set", "model.kwargs={scale: [1, 2}")
    for kind, content in ONNX_CONTENT.items():
        here = folder(f"onnx_{kind}")
        (here / "model.onnx").write_bytes(content)
        (here / "report").mkdir()
        (here / "report" / "report.json").write_text('{"earlier": true}\n')
        argv[f"onnx_{kind}"] = ["eval", str(here / "model.onnx"), "--synthetic", "--out", str(here / "report")]
    here = folder("eval_out_blocked")
    (here / "file").write_text("keep me\n")
    argv["eval_out_blocked"] = ["eval", str(_tiny_model(here / "model")), "--synthetic", "--out",
                                str(here / "file" / "out")]
    here = folder("train_out_blocked")
    (here / "file").write_text("")
    argv["train_out_blocked"] = _train_args(here / "file" / "run")
    run = folder("resume_unusable") / "run"
    for step in (2, 4):
        save_checkpoint(run, step, {"w": torch.zeros(2)}, {"step": step}, keep=5)
    (run / "checkpoints" / "step-00000004" / "state.pt").write_bytes(b"garbage")
    (run / "checkpoints" / "step-00000002" / "meta.json").unlink()
    argv["resume_unusable"] = _train_args(run, "--resume", "auto")
    here = folder("zero_embeddings")
    pairs = _pairs(here / "faces")
    argv["zero_embeddings"] = ["eval", str(_tiny_model(here / "model", zero=True)), "--pairs", str(pairs),
                               str(here / "faces"), "--out", str(here / "report")]
    data = shared_data_dir()
    if data.is_dir():  # the two probes on the real detector; their tests skip without it (shared_data)
        here = folder("detector_not_yunet")
        argv["detector_not_yunet"] = ["eval", str(_tiny_model(here / "model")), "--synthetic", "--detector",
                                      str(data / RECOGNIZER)]
        here = folder("no_face")
        pairs = _pairs(here / "faces", size=150)  # synthetic drawings: YuNet finds no face in them
        argv["no_face"] = ["eval", str(_tiny_model(here / "model")), "--pairs", str(pairs), str(here / "faces"),
                           "--detector", str(data / DETECTOR), "--out", str(here / "report")]
    here = folder("absurd_lr")  # last: a run that hangs must not hide the others
    (here / "c.yaml").write_text("optim:\n  weight_decay: 5e-4\n  momentum: 9E-1\n")  # YAML 1.1 would read strings
    argv["absurd_lr"] = ["train", str(here / "c.yaml"),
                         *_train_args(here / "run", "--set", "optim.lr=1e30", "--set", "optim.max_steps=30",
                                      "--set", "optim.nan_patience=2", "--set", "checkpoint_every=1")[1:]]
    try:
        done = subprocess.run([sys.executable, "-c", DRIVER, str(MEMORY_LIMIT)], input=json.dumps(argv),
                              capture_output=True, text=True, timeout=PROBE_SECONDS * 4, env=_env())
        output, errors = done.stdout, done.stderr
    except subprocess.TimeoutExpired as timeout:  # the probes that finished still count
        output = (timeout.stdout or b"").decode() if isinstance(timeout.stdout, bytes) else timeout.stdout or ""
        errors = f"the probes' child ran past {PROBE_SECONDS * 4} s"
    results, loose = {}, []
    for line in output.splitlines():
        if line.startswith('{"'):
            results.update(json.loads(line))
        else:
            loose.append(line)
    return SimpleNamespace(results=results, root=root, stdout="\n".join(loose), stderr=errors)


def _probe(probes: SimpleNamespace, name: str) -> SimpleNamespace:
    """One probe's result (returncode, stdout, stderr), which must have ended within PROBE_SECONDS."""
    result = probes.results.get(name)
    assert result is not None, f"probe {name} did not finish: {probes.stderr[-3000:]}"
    assert result["seconds"] < PROBE_SECONDS, f"probe {name} took {result['seconds']:.0f} s"
    return SimpleNamespace(**result)



# --------------------------------------------------------------------------- configuration values
def test_set_with_yaml_tag_names_the_key(probes) -> None:
    done = _probe(probes, "yaml_tag")
    _one_error(done, "--set optim.lr", "YAML tags are not allowed")
    assert "owned" not in done.stdout and "owned" not in probes.stdout
    assert not (probes.root["yaml_tag"] / "run").exists()


def test_set_with_unbalanced_brackets_names_the_key(probes) -> None:
    _one_error(_probe(probes, "brackets"), "--set model.kwargs")


def test_exponent_numbers_work_and_absurd_lr_stops_with_the_nan_guard(probes) -> None:
    done = _probe(probes, "absurd_lr")
    _one_error(done, "non-finite steps in a row", "last good checkpoint")  # within PROBE_SECONDS (a hang guard)
    assert "non-finite embedding, step skipped" in done.stderr  # caught before the head, not by its input check
    run = probes.root["absurd_lr"] / "run"
    resolved = (run / "config.yaml").read_text()
    assert "weight_decay: 0.0005" in resolved and "lr: 1.0e+30" in resolved
    weights, _, _ = load_checkpoint(list_checkpoints(run)[-1].path)  # the oldest kept checkpoint: before the NaN
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


# --------------------------------------------------------------------------- model and detector files
@pytest.mark.parametrize("kind", list(ONNX_CONTENT))
def test_invalid_onnx_file_is_one_error_and_earlier_report_survives(probes, kind: str) -> None:
    here = probes.root[f"onnx_{kind}"]
    _one_error(_probe(probes, f"onnx_{kind}"), str(here / "model.onnx"), "not a valid ONNX model")
    assert json.loads((here / "report" / "report.json").read_text()) == {"earlier": True}


def test_detector_that_is_not_yunet(probes, shared_data: Path) -> None:
    _one_error(_probe(probes, "detector_not_yunet"), str(shared_data / RECOGNIZER), "is not a YuNet face detector")


# --------------------------------------------------------------------------- outputs and disks
def test_eval_out_not_writable_fails_before_any_work(probes) -> None:
    blocker = probes.root["eval_out_blocked"] / "file"
    done = _probe(probes, "eval_out_blocked")
    _one_error(done, f"{blocker / 'out'} is not writable")
    assert "accuracy" not in done.stdout  # refused before the evaluation ran (no figures printed)
    assert blocker.read_text() == "keep me\n"


def test_train_output_dir_not_writable(probes) -> None:
    blocker = probes.root["train_out_blocked"] / "file"
    _one_error(_probe(probes, "train_out_blocked"), "output_dir", f"{blocker / 'run'} is not writable")


def test_resume_auto_refuses_when_every_checkpoint_is_unusable(probes) -> None:
    line = _one_error(_probe(probes, "resume_unusable"), "no usable checkpoint",
                      "step-00000004: state.pt does not match its checksum", "step-00000002: no readable meta.json",
                      "--resume none")
    assert "starting from scratch" not in line
    run = probes.root["resume_unusable"] / "run"
    assert [c.step for c in list_checkpoints(run)] == [4, 2]  # nothing deleted: the user decides


def test_full_disk_during_checkpoint_removes_the_partial_copy(tmp_path: Path) -> None:
    """In a `python -m marginface` process of its own: the real entry point, on a real full disk."""
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
def test_zero_embeddings_are_flagged_in_console_and_report(probes) -> None:
    done = _probe(probes, "zero_embeddings")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "marginface: warning: faces: every embedding is zero" in done.stderr
    report = json.loads((probes.root["zero_embeddings"] / "report" / "report.json").read_text())
    assert any("every embedding is zero" in w for w in report["verification"][0]["warnings"])


def test_photos_without_a_face_are_listed_and_warned(probes, shared_data: Path) -> None:
    done = _probe(probes, "no_face")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "were centre-cropped because no face was found" in done.stderr
    entry = json.loads((probes.root["no_face"] / "report" / "report.json").read_text())["verification"][0]
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
