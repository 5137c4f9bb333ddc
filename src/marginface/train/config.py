"""Training configuration: dataclasses with YAML round trip and `--set a.b=value` overrides."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from marginface.data.perturb import PerturbationSpecError, RandomDegradation
from marginface.errors import UsageError
from marginface.heads.margin import ARCFACE, SCALE
from marginface.heads.registry import get_head, head_entry, head_names


class ConfigError(UsageError):
    """A training configuration that cannot be used; the message names the key, the value and what it needs."""


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads the numbers people write: YAML 1.1 takes `1e-3` and `5E4` (no dot)
    for strings, YAML 1.2 and every programming language for floats. Tags stay refused (safe loader)."""


ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """YAML text → Python values with ConfigLoader (safe, exponent notation read as float)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader


DEFAULT_AUGMENT_RANGES: dict[str, list[float]] = {  # docs/training.md, "Degradation-aware fine-tuning"
    "downscale": [12, 64], "blur": [0.5, 5.0], "jpeg": [8, 60], "occlude": [0.05, 0.3], "gamma": [0.4, 2.5],
    "gray": [],
}


@dataclass
class AugmentConfig:
    """Training-time degradations (marginface.data.perturb.RandomDegradation): off while probability is 0."""

    probability: float = 0.0  # share of samples degraded
    max_kinds: int = 1  # a degraded sample gets 1..max_kinds distinct kinds, applied in random order
    kinds: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in
                                                                   DEFAULT_AUGMENT_RANGES.items()})


@dataclass
class DataConfig:
    """Where training images come from and how they are batched."""

    kind: str = "synthetic"  # synthetic | folder | recordio
    path: str | None = None  # folder root, or RecordIO directory / train.rec
    synthetic_identities: int = 200
    synthetic_samples: int = 24
    synthetic_seed: int = 0
    batch_size: int = 64  # global batch (split across processes)
    workers: int = 2
    flip: bool = True
    on_error: str = "skip"  # skip | raise for undecodable images
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """Backbone architecture and options; `pretrained` starts from a checkpoint or an ONNX model."""

    backbone: str = "mbf"  # a registry name, or "onnx": the architecture of the ONNX file in `pretrained`
    num_features: int = 512
    dropout: float = 0.0
    gradient_checkpointing: bool = False
    channels_last: bool = False
    pretrained: str | None = None  # exported model dir, arcface_torch backbone .pth / model.pt, or model.onnx
    pretrained_input: dict[str, Any] = field(default_factory=dict)  # an ONNX model's channel_order, mean, std
    freeze_layers: int = 0  # the first N parameter-holding layers stay fixed
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor options (e.g. mbf scale, blocks)


@dataclass
class HeadConfig:
    """The head: `kind` names a registered head (marginface.heads.registry), the keys below are its options.

    m1/m2/m3 are the combined margin of kind margin (and subcenter); s, sample_rate, chunk_size and
    detach_margin apply to the heads that take them (s is ignored by the heads without a scale: softmax,
    sphereface_original); every other constructor option goes in `kwargs` (e.g. {m: 0.4, h: 0.333}).
    """

    kind: str = "margin"  # a registered head name; see docs/training.md for each kind's options
    s: float = SCALE
    m1: float = ARCFACE.m1
    m2: float = ARCFACE.m2
    m3: float = ARCFACE.m3
    sample_rate: float = 1.0
    chunk_size: int | None = None
    detach_margin: bool = False
    init: str = "normal"  # normal (N(0, 0.01²)) | spread (unit centres evenly apart) | class_mean (see training.md)
    kwargs: dict[str, Any] = field(default_factory=dict)  # the kind's other options (e.g. sub_centers, h)


HEAD_KEYS = ("s", "m1", "m2", "m3", "sample_rate", "chunk_size", "detach_margin")  # head.* keys heads may take


def head_options(head: HeadConfig) -> dict[str, Any]:
    """The constructor options of head.kind from the head.* keys and head.kwargs; a key set to something
    other than its default that the kind does not take is an error naming the key and the value."""
    entry = head_entry(head.kind)
    defaults = HeadConfig()
    options: dict[str, Any] = {}
    for key in HEAD_KEYS:
        value = getattr(head, key)
        if key in entry.options:
            options[key] = value
        elif key != "s" and value != getattr(defaults, key):
            raise ConfigError(f"head.{key} = {value!r} does not apply to head.kind = {head.kind!r}, "
                             f"which takes {list(entry.options)}")
    own = [name for name in entry.options if name not in HEAD_KEYS]
    for key, value in head.kwargs.items():
        if key in HEAD_KEYS:
            raise ConfigError(f"head.kwargs.{key} = {value!r}: set head.{key} instead")
        if key not in own:
            raise ConfigError(f"head.kwargs.{key} = {value!r} is not an option of head.kind = {head.kind!r}; "
                             f"its head.kwargs are {own}")
        options[key] = value
    return options


@dataclass
class OptimConfig:
    """Optimiser, schedule (linear warm-up then polynomial decay, per iteration) and step options."""

    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 10
    max_steps: int | None = None  # stop early (and size the schedule) at this many steps
    warmup_epochs: float = 0.0
    poly_power: float = 2.0
    grad_clip: float | None = 5.0
    accumulate: int = 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 needs CUDA)
    nan_patience: int = 5  # stop after this many non-finite steps in a row
    backbone_lr_scale: float = 1.0  # the backbone's lr is lr × this (the head keeps lr); fine-tuning: 0.1
    head_only_steps: int = 0  # the first N steps train the head alone (backbone frozen, no backward through it)
    distill_weight: float = 0.0  # weight of mean(1 − cos(student(augmented), start model(clean)))


@dataclass
class EvalConfig:
    """Periodic verification: which sets, how often."""

    every_steps: int = 0  # 0 = only at the end
    synthetic: bool = True  # held-out synthetic identities
    synthetic_identities: int = 100
    synthetic_pairs_per_fold: int = 30
    bins: list[str] = field(default_factory=list)
    pairs: list[list[str]] = field(default_factory=list)  # [[pairs.txt, image_root], ...]
    flip: bool = True
    batch_size: int = 64


@dataclass
class TrainConfig:
    """Everything a run needs; saved resolved as run_dir/config.yaml."""

    output_dir: str = "runs/demo"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    deterministic: bool = False
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    export_onnx: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Nested plain dict."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """YAML text of the resolved configuration."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check/convert a YAML value against a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ValueError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(annotation) or (Any,)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _from_dict(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        place = f"{where}: unknown" if where else "unknown top-level"
        raise ConfigError(f"{place} key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict | None) -> TrainConfig:
    """Build and validate a TrainConfig from nested dicts (unknown keys and wrong types are errors)."""
    config = _from_dict(TrainConfig, data or {}, "")
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Cross-field checks with messages that name the key and the value."""
    choices = {"data.kind": (config.data.kind, ("synthetic", "folder", "recordio")),
               "data.on_error": (config.data.on_error, ("skip", "raise")),
               "head.kind": (config.head.kind, tuple(head_names())),
               "head.init": (config.head.init, ("normal", "spread", "class_mean")),
               "optim.optimizer": (config.optim.optimizer, ("sgd", "adamw")),
               "optim.precision": (config.optim.precision, ("fp32", "bf16", "fp16")),
               "device": (config.device, ("auto", "cpu", "cuda"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r}; choose one of {list(allowed)}")
    if config.data.kind != "synthetic" and not config.data.path:
        raise ConfigError(f"data.path is required for data.kind = {config.data.kind!r}")
    for key, value in (("data.batch_size", config.data.batch_size), ("optim.accumulate", config.optim.accumulate),
                       ("model.num_features", config.model.num_features)):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if config.optim.optimizer == "adamw" and config.head.sample_rate < 1:
        raise ConfigError("head.sample_rate < 1 (Partial FC) needs optim.optimizer = 'sgd' (sparse row updates)")
    _validate_head(config.head)
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {config.optim.lr}")
    _validate_finetuning(config)


def _validate_head(head: HeadConfig) -> None:
    """head.kind's options: each key applies to the kind, and a tiny instance builds with the values."""
    options = head_options(head)
    try:
        get_head(head.kind, 2, 2, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"head (kind = {head.kind!r}, options {options}): {err}") from None


def _validate_finetuning(config: TrainConfig) -> None:
    """The fine-tuning keys: an ONNX start, frozen layers, lr scale, head-only steps, distillation, augment."""
    model, optim = config.model, config.optim
    is_onnx_file = bool(model.pretrained) and str(model.pretrained).lower().endswith(".onnx")
    if model.backbone == "onnx" and not is_onnx_file:
        raise ConfigError(f"model.backbone = 'onnx' builds the network from an ONNX file: set model.pretrained to "
                         f"a .onnx path (got {model.pretrained!r})")
    if is_onnx_file and model.backbone != "onnx":
        raise ConfigError(f"model.pretrained = {model.pretrained!r} is an ONNX model: set model.backbone: onnx "
                         f"(its architecture comes from the file, not {model.backbone!r})")
    if model.pretrained_input and model.backbone != "onnx":
        raise ConfigError("model.pretrained_input describes an ONNX model's input; it needs model.backbone: onnx")
    for key, value in (("model.freeze_layers", model.freeze_layers), ("optim.head_only_steps", optim.head_only_steps)):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    for key, value in (("optim.backbone_lr_scale", optim.backbone_lr_scale),
                       ("optim.distill_weight", optim.distill_weight)):
        if not (value >= 0 and value != float("inf")):
            raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
    try:
        augment_from_config(config)
    except PerturbationSpecError as err:
        raise ConfigError(f"data.augment: {err}") from None


def augment_from_config(config: TrainConfig) -> RandomDegradation:
    """The RandomDegradation that config.data.augment describes (validated)."""
    augment = config.data.augment
    ranges = {kind: (tuple(bounds) if bounds else None) for kind, bounds in augment.kinds.items()}
    return RandomDegradation(ranges, probability=augment.probability, max_kinds=augment.max_kinds)


DEMO_CONFIG = Path(__file__).with_name("demo.yaml")  # what `marginface train` runs without a config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML (or start from defaults) and apply `a.b=value` overrides (values parsed as YAML)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            data = parse_yaml(path.read_text()) or {}
        except OSError as err:
            raise FileNotFoundError(f"cannot read config {path}: {err}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        try:
            node[parts[-1]] = parse_yaml(raw)
        except yaml.YAMLError as err:
            reason = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ConfigError(f"--set {key}: cannot read value {raw!r} ({reason}); quote plain strings, "
                             f"YAML tags are not allowed") from err
    return config_from_dict(data)
