"""Fine-tuning an imported ONNX model: lr scale, frozen layers, head-only steps, class-mean centres,
distillation, degradation augmentation, and a resume that equals the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from marginface.backbones import get_backbone, load
from marginface.data.samples import collate
from marginface.data.transforms import to_model_input
from marginface.infer.export import export_onnx
from marginface.train.config import load_config
from marginface.train.trainer import Trainer

from .helpers import tiny_config

AUGMENT = "data.augment={probability: 1.0, max_kinds: 2, kinds: {downscale: [10, 40], blur: [1, 3], gray: []}}"


@pytest.fixture(scope="module")
def pretrained_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MobileFaceNet with non-trivial weights, exported to ONNX: the 'model somebody else trained'."""
    torch.manual_seed(3)
    model = get_backbone("mbf", num_features=16, scale=1, blocks=(1, 1, 1, 1), input_pool=4)
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 112, 112) * 2 - 1)  # BN statistics away from their defaults
    return export_onnx(model.eval(), tmp_path_factory.mktemp("pre") / "pretrained.onnx")


def _onnx_config(run_dir: Path, pretrained: Path, *extra: str):
    return tiny_config(run_dir, "model.backbone=onnx", f"model.pretrained={pretrained}", "model.kwargs={}", *extra)


def _backbone_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in trainer.backbone.state_dict().items()}


def test_head_only_steps_and_frozen_layers_keep_the_pretrained_weights(tmp_path: Path, pretrained_onnx: Path) -> None:
    trainer = Trainer(_onnx_config(tmp_path / "run", pretrained_onnx, "optim.head_only_steps=2", "optim.max_steps=2",
                                   "checkpoint_every=0"))
    start, head_start = _backbone_state(trainer), trainer.head.weight.detach().clone()
    trainer.train()
    after = _backbone_state(trainer)
    assert all(torch.equal(start[k], after[k]) for k in start)  # the head alone learned
    assert not torch.equal(head_start, trainer.head.weight.detach())

    trainer = Trainer(_onnx_config(tmp_path / "frozen", pretrained_onnx, "model.freeze_layers=3",
                                   "optim.backbone_lr_scale=0.1", "optim.max_steps=3", "checkpoint_every=0"))
    frozen = [name for name, param in trainer.backbone.named_parameters() if not param.requires_grad]
    assert len(frozen) == 5  # conv weight + bias, PReLU slope, conv weight + bias (BN is folded into the convs)
    assert trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.005)
    assert trainer.optimizer.param_groups[1]["initial_lr"] == pytest.approx(0.05)
    start = _backbone_state(trainer)
    trainer.train()
    after = _backbone_state(trainer)
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed and not changed & {f"{name}" for name in frozen}


def test_class_mean_centres_are_each_identitys_mean_embedding(tmp_path: Path, pretrained_onnx: Path) -> None:
    trainer = Trainer(_onnx_config(tmp_path / "run", pretrained_onnx, "head.init=class_mean"))
    trainer._init_centres_from_class_means()
    items = [trainer.dataset[i] for i in range(len(trainer.dataset))]
    batch = collate(items)
    with torch.no_grad():
        embeddings = trainer.backbone.eval()(to_model_input(batch.images)).double()
    embeddings = embeddings / embeddings.norm(dim=1, keepdim=True)
    for label in range(trainer.num_classes):
        mean = embeddings[batch.labels == label].mean(0)
        torch.testing.assert_close(trainer.head.weight[label].double(), mean / mean.norm(), atol=1e-6, rtol=0)


def test_augmented_distilled_run_resumes_exactly_and_exports(tmp_path: Path, pretrained_onnx: Path) -> None:
    """Degradations are drawn per (seed, epoch, batch, rank): a run resumed at step 3 equals the straight one."""
    extra = (AUGMENT, "optim.distill_weight=1.0", "optim.head_only_steps=1", "head.init=class_mean",
             "checkpoint_every=3", "export_onnx=true")
    straight = Trainer(_onnx_config(tmp_path / "straight", pretrained_onnx, *extra))
    straight.train()
    resumed = Trainer(_onnx_config(tmp_path / "resumed", pretrained_onnx, *extra))
    resumed.resume(str(tmp_path / "straight" / "checkpoints" / "step-00000003"))
    resumed.train()
    final = "checkpoints/step-00000006/weights.safetensors"
    expected, got = load_file(str(tmp_path / "straight" / final)), load_file(str(tmp_path / "resumed" / final))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    model = load(tmp_path / "straight" / "model")  # rebuilt from model.json's graph, no source file needed
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), straight.backbone.eval()(x))
    assert (tmp_path / "straight" / "model" / "model.onnx").is_file()


def test_augmentation_changes_training_input_and_distillation_pulls_to_the_start(tmp_path: Path,
                                                                                 pretrained_onnx: Path) -> None:
    trainer = Trainer(_onnx_config(tmp_path / "run", pretrained_onnx, AUGMENT))
    images = collate([trainer.dataset[i] for i in range(8)]).images
    clean, degraded = trainer._inputs(images)
    assert clean.shape == degraded.shape and not torch.equal(clean, degraded)
    again_clean, again = trainer._inputs(images)
    assert torch.equal(again, degraded) and torch.equal(again_clean, clean)  # same (epoch, batch, rank) → same
    trainer.sampler.batches_done += 1
    assert not torch.equal(trainer._inputs(images)[1], degraded)
    plain = Trainer(_onnx_config(tmp_path / "plain", pretrained_onnx))
    clean, degraded = plain._inputs(images)
    assert clean is degraded


@pytest.mark.parametrize(("override", "message"), [
    ("model.backbone=onnx", "model.backbone = 'onnx' builds the network from an ONNX file"),
    ("model.pretrained=/models/start.onnx", "is an ONNX model: set model.backbone: onnx"),
    ("optim.backbone_lr_scale=-1", "optim.backbone_lr_scale must be a finite number >= 0"),
    ("model.freeze_layers=-2", "model.freeze_layers must be >= 0"),
    ("data.augment={probability: 0.5, kinds: {sharpen: [1, 2]}}", "unknown kind 'sharpen'"),
    ("data.augment={probability: 0.5, kinds: {blur: [3, 1]}}", "low <= high"),
    ("data.augment={probability: 0.5, kinds: {jpeg: [0, 50]}}", "1 <= QUALITY <= 100"),
    ("data.augment={probability: 1.5}", "probability must be in [0, 1]"),
    ("data.augment={probability: 0.5, max_kinds: 9, kinds: {gray: []}}", "max_kinds must be between 1 and the 1"),
])
def test_finetuning_keys_are_checked_with_the_key_named(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


def test_freezing_more_layers_than_the_model_has_is_refused(tmp_path: Path, pretrained_onnx: Path) -> None:
    with pytest.raises(ValueError, match="model.freeze_layers = 999, but the backbone has only"):
        Trainer(_onnx_config(tmp_path / "run", pretrained_onnx, "model.freeze_layers=999"))


def test_num_features_must_match_the_onnx_model(tmp_path: Path, pretrained_onnx: Path) -> None:
    with pytest.raises(ValueError, match="embedding size is 16, model.num_features is 32"):
        Trainer(_onnx_config(tmp_path / "run", pretrained_onnx, "model.num_features=32"))


def test_default_augment_ranges_are_valid_and_off() -> None:
    config = load_config(None, [])
    assert config.data.augment.probability == 0.0
    assert set(config.data.augment.kinds) == {"downscale", "blur", "jpeg", "occlude", "gamma", "gray"}
    on = load_config(None, ["data.augment.probability=1.0"])
    rng = np.random.default_rng(0)
    from marginface.train.config import augment_from_config

    drawn = {p.kind for _ in range(200) for p in augment_from_config(on).sample(rng)}
    assert drawn == set(config.data.augment.kinds)
