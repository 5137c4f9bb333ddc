"""Config: YAML round trip, overrides, clear errors; shipped presets parse."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from marginface.train.config import config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_yaml_round_trip_and_overrides(tmp_path: Path) -> None:
    config = load_config(None, ["optim.lr=0.05", "head.chunk_size=4096", "model.kwargs={scale: 1}",
                                "eval.pairs=[[p.txt, imgs]]"])
    assert config.optim.lr == 0.05 and config.head.chunk_size == 4096 and config.model.kwargs == {"scale": 1}
    (tmp_path / "c.yaml").write_text(config.to_yaml())
    assert load_config(tmp_path / "c.yaml") == config


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", r"optim: unknown key\(s\) \['lrr'\]"),
    ("optim.lr=abc", "optim.lr: expected float, got 'abc'"),
    ("data.kind=video", "data.kind = 'video'; choose one of"),
    ("data.kind=folder", "data.path is required"),
    ("optim.precision=fp8", "optim.precision"),
    ("lr", "--set expects key=value"),
    ("resume=auto", r"^unknown top-level key\(s\) \['resume'\]"),
    ("model.num_features=0", "model.num_features must be >= 1, got 0"),
    ("model.num_features=-1", "model.num_features must be >= 1, got -1"),
])
def test_errors_name_key_and_value(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_adamw_with_partial_fc_rejected() -> None:
    with pytest.raises(ValueError, match="sample_rate < 1"):
        config_from_dict({"optim": {"optimizer": "adamw"}, "head": {"sample_rate": 0.5}})


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")))
def test_presets_parse(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5E-4\n  momentum: .9\nhead:\n  s: 6.4e+1\n")
    config = load_config(path, ["optim.grad_clip=1e1", "data.path=1e3x"])
    assert (config.optim.lr, config.optim.weight_decay, config.optim.momentum) == (0.001, 0.0005, 0.9)
    assert config.head.s == 64.0 and config.optim.grad_clip == 10.0
    assert config.data.path == "1e3x"  # not a number: stays a string
    assert config.optim.epochs == 10 and isinstance(load_config(None, ["optim.epochs=12"]).optim.epochs, int)


@pytest.mark.parametrize("value", ["!!python/object/apply:os.system [echo owned]", "{scale: [1, 2}", "[1"])
def test_set_values_with_tags_or_unbalanced_brackets_name_the_key(value: str) -> None:
    with pytest.raises(ValueError, match=r"^--set model\.kwargs: cannot read value"):
        load_config(None, [f"model.kwargs={value}"])
