"""The console entry point answers --help and --version."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from marginface import __version__
from marginface.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_via_module() -> None:
    out = subprocess.run([sys.executable, "-m", "marginface", "--help"], capture_output=True, text=True, check=True)
    assert "margin-based softmax" in out.stdout


def test_train_without_config_runs_the_embedded_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """`marginface train` alone loads the packaged demo config (the one configs/synthetic_demo.yaml links to)."""

    import marginface.train.trainer as trainer_module
    from marginface.train.config import DEMO_CONFIG, load_config

    repo_demo = Path(__file__).resolve().parents[2] / "configs" / "synthetic_demo.yaml"
    assert DEMO_CONFIG.is_file() and repo_demo.resolve() == DEMO_CONFIG.resolve()
    loaded = []

    from marginface.errors import RunFailed

    class StopBeforeTraining(RunFailed):  # a user's error (exit 2); a plain RuntimeError would be a bug (exit 70)
        pass

    def fake_trainer(config, ctx, on_event):
        loaded.append(config)
        raise StopBeforeTraining("stop before training")

    caplog.set_level(logging.INFO, logger="marginface.cli")
    monkeypatch.chdir(tmp_path)  # the demo's output_dir is relative: keep an earlier demo run out of it
    monkeypatch.setattr(trainer_module, "Trainer", fake_trainer)
    assert main(["train"]) == 2
    assert loaded and loaded[0] == load_config(DEMO_CONFIG)
    assert loaded[0].model.num_features == 128 and loaded[0].data.kind == "synthetic"
    assert "embedded synthetic demo" in caplog.text


def test_a_fresh_run_refuses_a_folder_holding_another_runs_checkpoints(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ..train.helpers import TINY

    argv = ["train", *[arg for value in [*TINY, "optim.max_steps=2", f"output_dir={tmp_path / 'run'}"]
                       for arg in ("--set", value)]]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds a run (checkpoints up to step 2): continue it with --resume auto" in capsys.readouterr().err
    assert main([*argv, "--resume", "auto"]) == 0


def test_a_bug_prints_its_traceback_and_exits_70_not_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A plain ValueError escaping the library is a bug, not the user's error: traceback, exit status 70."""
    import marginface.data.check as check_module

    def broken(*_args, **_kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(check_module, "check_data", broken)
    assert main(["data", "check", str(tmp_path)]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: an internal invariant broke" in err
    assert "marginface: internal error (a bug" in err and "marginface: error:" not in err


def test_a_users_error_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marginface: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_the_parser_loads_no_library_and_every_family_registers(tmp_path: Path) -> None:
    """`marginface --help` stays fast: building the parser of every family imports neither torch nor OpenCV."""
    code = ("import sys; from marginface.cli import build_parser; parser = build_parser(); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cv2', 'numpy')); "
            "assert not heavy, heavy; "
            "names = set(parser._subparsers._group_actions[0].choices); "
            "assert names == {'data', 'eval', 'train', 'export', 'verify', 'gallery', 'enrol', 'enroll', 'identify', "
            "'people', 'cluster', 'serve'}, names")
    src = Path(__file__).resolve().parents[2] / "src"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={"PYTHONPATH": str(src)})
