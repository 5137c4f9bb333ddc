"""The loop: trains, logs, exports; NaN guard; SIGKILL at a random step + resume = uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from marginface.backbones import load
from marginface.train.checkpoint import latest_valid, list_checkpoints
from marginface.train.events import DoneEvent, EvalEvent, NonfiniteEvent, SkipEvent, StartEvent, StepEvent
from marginface.train.trainer import Trainer, TrainingDiverged

from .helpers import TINY, tiny_config


def test_tiny_run_trains_logs_and_exports(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", "export_onnx=true", "eval.synthetic=true",
                         "eval.synthetic_identities=6", "eval.synthetic_pairs_per_fold=2")
    events: list = []
    trainer = Trainer(config, on_event=events.append)
    initial = {name: value.clone() for name, value in trainer.backbone.state_dict().items()}
    result = trainer.train()
    assert result.steps == 6 and result.skipped_steps == 0
    assert events[0] == StartEvent(step=0, total=6)  # a progress bar can begin at step 0
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6]
    assert steps[-1].loss < steps[0].loss * 0.75  # 13.1 -> 3.9 on this seed; a trainer that never updated fails
    assert isinstance(events[-1], DoneEvent) and events[-1].result == result
    run = tmp_path / "run"
    for name in ("config.yaml", "labels.json", "metrics.csv", "result.json", "model/model.json",
                 "model/model.safetensors", "model/model.onnx"):
        assert (run / name).is_file(), name
    evaluated = [e for e in events if isinstance(e, EvalEvent)]
    saved = json.loads((run / "result.json").read_text())["verification"]
    assert saved == result.verification == {"synthetic": evaluated[-1].accuracy}
    assert 0.0 <= saved["synthetic"] <= 1.0
    assert any((run / "tensorboard").iterdir())
    trained = load(run / "model")
    assert trained.num_features == 16
    changed = [name for name, value in trained.state_dict().items()
               if value.is_floating_point() and not torch.equal(value, initial[name])]
    assert changed, "no backbone weight changed during training"


def test_nan_guard_stops_with_context_and_keeps_checkpoint(tmp_path: Path, monkeypatch) -> None:
    config = tiny_config(tmp_path / "run", "optim.max_steps=20", "optim.nan_patience=3")
    trainer = Trainer(config)
    real_forward = type(trainer.head).forward
    calls = {"n": 0}

    def poisoned(self, embeddings, labels):
        calls["n"] += 1
        loss = real_forward(self, embeddings, labels)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(type(trainer.head), "forward", poisoned)
    # calls 1-4 train (steps 0-3); calls 5, 6, 7 are skipped steps 4, 5, 6 and the third one stops the run
    expected = r"stopped at step 6: 3 non-finite steps in a row \(lr .*, last finite loss"
    with pytest.raises(TrainingDiverged, match=expected):
        trainer.train()
    info = latest_valid(tmp_path / "run")
    weights = load_file(str(info.path / "weights.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert trainer.skipped_steps == 3
    assert trainer.metrics._tensorboard is None  # the metrics writer was closed although the run raised


def _poison(trainer: Trainer) -> tuple[torch.nn.Parameter, Tensor]:
    """Fill the backbone's last parameter with NaN (a real non-finite embedding, as divergence gives)."""
    weight = list(trainer.backbone.parameters())[-1]
    original = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    return weight, original


def test_nonfinite_embedding_is_skipped_counted_and_training_goes_on(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path / "run", "optim.max_steps=6", "optim.nan_patience=3"))
    saved: dict = {}

    def on_event(event) -> None:
        if isinstance(event, StepEvent) and event.step == 2:
            saved["weight"], saved["original"] = _poison(trainer)
        elif isinstance(event, NonfiniteEvent):  # the step was skipped without touching the weights: heal them
            with torch.no_grad():
                saved["weight"].copy_(saved["original"])

    trainer.on_event = on_event
    result = trainer.train()
    assert result.steps == 6 and result.skipped_steps == 1 and math.isfinite(result.final_loss)


def test_nonfinite_embeddings_stop_after_patience(tmp_path: Path, caplog) -> None:
    trainer = Trainer(tiny_config(tmp_path / "run", "optim.max_steps=20", "optim.nan_patience=3"))
    _poison(trainer)
    with pytest.raises(TrainingDiverged, match=r"stopped at step 2: 3 non-finite steps in a row"):
        trainer.train()
    assert trainer.skipped_steps == 3 and "non-finite embedding, step skipped" in caplog.text


def _train_cli(run: Path, *extra: str) -> list[str]:
    # full resolution (input_pool 1): steps slow enough that the kill lands mid-run with a wide margin
    return [sys.executable, "-m", "marginface", "train", *sum((["--set", s] for s in TINY), []),
            "--set", "model.kwargs={scale: 1, blocks: [1, 1, 1, 1]}",
            "--set", f"output_dir={run}", "--set", "optim.max_steps=8", "--set", "checkpoint_every=1",
            "--set", "model.dropout=0.2", "--set", "head.sample_rate=0.5", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_cli(tmp_path / "straight"), check=True, env=env, capture_output=True)
    kill_after = random.Random(os.getpid()).randint(2, 6)
    proc = subprocess.Popen(_train_cli(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list_checkpoints(tmp_path / "killed")) >= kill_after:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest_valid(tmp_path / "killed").step
    assert killed_at < 8, "the run finished before it could be killed"
    subprocess.run(_train_cli(tmp_path / "killed", "--resume", "auto"), check=True, env=env, capture_output=True)
    straight = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000008" / "weights.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "checkpoints" / "step-00000008" / "weights.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path / "run", "optim.max_steps=2"))
    assert trainer.resume("auto") is False


def test_adamw_accumulation_bf16_and_clipping(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", "optim.optimizer=adamw", "optim.lr=0.001", "optim.accumulate=2",
                         "optim.precision=bf16", "optim.grad_clip=0.5", "optim.max_steps=3", "checkpoint_every=0")
    events: list = []
    result = Trainer(config, on_event=events.append).train()
    assert result.steps == 3 and result.skipped_steps == 0
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert all(math.isfinite(e.loss) for e in steps)
    assert not list_checkpoints(tmp_path / "run")


def test_finetune_from_arcface_torch_style_pth(tmp_path: Path) -> None:
    from marginface.backbones import get_backbone

    source = get_backbone("mbf", num_features=16, scale=1, blocks=(1, 1, 1, 1), input_pool=4)  # TINY's backbone
    torch.nn.init.constant_(source.features.layers[2].weight, 0.01)
    # arcface_torch's model.pt of a DDP run: parameter names behind 'module.'
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "model.pt")
    trainer = Trainer(tiny_config(tmp_path / "run", f"model.pretrained={tmp_path / 'model.pt'}"))
    torch.testing.assert_close(trainer.backbone.features.layers[2].weight.detach(),
                               source.features.layers[2].weight.detach())
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Trainer(tiny_config(tmp_path / "run2", f"model.pretrained={tmp_path / 'missing.pth'}"))


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "marginface", "train", *sum((["--set", s] for s in TINY), []),
               "--set", f"output_dir={tmp_path / 'run'}", "--set", "optim.max_steps=3"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done: 3 steps" in done.stdout
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 3


def test_folder_data_with_corrupt_images_counts_skips(tmp_path: Path) -> None:
    from ..data.helpers import write_identity_folder

    folder = write_identity_folder(tmp_path / "faces", identities=3, per_identity=4)
    (folder / "id_00" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = tiny_config(tmp_path / "run", "data.kind=folder", f"data.path={folder}", "optim.max_steps=3")
    events: list = []
    result = Trainer(config, on_event=events.append).train()
    assert result.steps == 3 and result.skipped_images >= 1
    assert any(isinstance(e, SkipEvent) for e in events)
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert labels["0"] == "id_00" and len(labels) == 3


def test_softmax_baseline_head_trains_and_resumes(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", "head.kind=softmax", "optim.max_steps=2")
    result = Trainer(config).train()
    assert result.steps == 2 and math.isfinite(result.final_loss)
    trainer = Trainer(config)
    assert trainer.resume("auto") and trainer.step == 2
    assert not any(name.endswith("bias") for name, _ in trainer.head.named_parameters())
    with pytest.raises(ValueError, match="head.kind"):
        tiny_config(tmp_path / "bad", "head.kind=softmax", "head.sample_rate=0.5")


@pytest.mark.parametrize("kind", ["margin", "softmax"])
def test_head_init_spread_starts_every_head_kind_from_spread_centres(tmp_path: Path, kind: str) -> None:
    from marginface.heads import spread_centres

    trainer = Trainer(tiny_config(tmp_path / kind, "head.init=spread", f"head.kind={kind}"))
    torch.testing.assert_close(trainer.head.weight.detach(), spread_centres(6, 16))
    with pytest.raises(ValueError, match="head.init"):
        tiny_config(tmp_path / "bad", "head.init=zeros")


def test_resume_from_a_checkpoint_of_another_model_names_it_in_one_line(tmp_path: Path) -> None:
    Trainer(tiny_config(tmp_path / "run", "optim.max_steps=2")).train()
    other = Trainer(tiny_config(tmp_path / "other", "model.num_features=8"))
    with pytest.raises(ValueError, match=r"step-00000002.*does not fit this run's backbone") as caught:
        other.resume(str(latest_valid(tmp_path / "run").path))
    assert "\n" not in str(caught.value)


def test_a_library_trainer_refuses_a_folder_holding_another_run(tmp_path: Path) -> None:
    """The refusal to mix runs is the Trainer's own: a library user gets it, and resuming is still allowed."""
    from marginface.errors import UsageError

    Trainer(tiny_config(tmp_path / "run", "optim.max_steps=2")).train()
    before = (tmp_path / "run" / "metrics.csv").read_text()
    with pytest.raises(UsageError, match=r"already holds a run \(checkpoints up to step 2\)"):
        Trainer(tiny_config(tmp_path / "run", "optim.max_steps=2")).train()
    assert (tmp_path / "run" / "metrics.csv").read_text() == before  # refused before anything was written
    resumed = Trainer(tiny_config(tmp_path / "run", "optim.max_steps=2"))
    assert resumed.resume("auto")  # continuing the run in the folder is what it is for
    assert resumed.train().steps == 2
