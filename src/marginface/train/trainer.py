"""The training loop: data → backbone → margin head → optimiser, with checkpoints, resume, NaN guard,
periodic verification, CSV / TensorBoard logs and the exported model at the end.

The library reports progress through an `on_event` callback that receives the typed events of
marginface.train.events (StartEvent comes before the first step with the step a resumed run continues
from, so a progress bar can begin there); it never prints.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from marginface.backbones import get_backbone, load_weights
from marginface.backbones import save as save_backbone
from marginface.backbones.onnx_import import OnnxBackbone, import_onnx
from marginface.data.folder import ImageFolderDataset
from marginface.data.labels import LABELS_NAME, write_class_names
from marginface.data.pairs import PairSet, read_bin, read_pairs_txt
from marginface.data.recordio import RecordIODataset
from marginface.data.samples import Batch, SubstituteBadSamples, collate, require_samples
from marginface.data.synthetic import SyntheticFaces, synthetic_pairs
from marginface.data.transforms import to_model_input
from marginface.errors import RunFailed
from marginface.eval.pipeline import evaluate_pair_set
from marginface.fileio import ensure_writable_dir
from marginface.heads.centres import spread_centres
from marginface.heads.contract import missing_head_members
from marginface.heads.registry import get_head, head_entry
from marginface.infer.embedder import TorchEmbedder
from marginface.seeding import augment_stream, flip_seed, loader_seed, rank_seed
from marginface.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest,
    refuse_mixing_runs,
    save_checkpoint,
)
from marginface.train.config import ConfigError, TrainConfig, augment_from_config, head_options
from marginface.train.distributed import (
    DistContext,
    all_agree,
    all_reduce_gradients,
    broadcast_module,
    even_share,
    gather_row_state,
    gather_rows,
    restore_row_state,
    split_row_state,
)
from marginface.train.events import (
    CheckpointEvent,
    DoneEvent,
    EvalEvent,
    EventHandler,
    NonfiniteEvent,
    SkipEvent,
    StartEvent,
    StepEvent,
    TrainResult,
)
from marginface.train.finetune import (
    class_mean_embeddings,
    distillation_loss,
    freeze_leading_layers,
    frozen_copy,
    hold_frozen_statistics,
)
from marginface.train.metrics import MetricsWriter, Throughput
from marginface.train.optim import SparseRowSGD
from marginface.train.sampler import ResumableSampler
from marginface.train.schedule import PolySchedule

log = logging.getLogger(__name__)


class TrainingDiverged(RunFailed):
    """Too many non-finite steps in a row; the message names the step, the lr and the last finite loss."""


@dataclass
class _MicroBatch:
    """What one forward / backward pass found (every rank agrees on both flags)."""

    loss: float  # NaN unless finite_loss
    finite_embeddings: bool
    finite_loss: bool


def build_dataset(config: TrainConfig) -> Dataset:
    """The training dataset named by config.data (flip is applied per batch by the trainer)."""
    data = config.data
    if data.kind == "synthetic":
        return SyntheticFaces(data.synthetic_identities, data.synthetic_samples, seed=data.synthetic_seed)
    if data.kind == "folder":
        return ImageFolderDataset(data.path, on_error=data.on_error)
    return RecordIODataset(data.path, on_error=data.on_error)


def build_backbone(config: TrainConfig) -> nn.Module:
    """The backbone, initialised from config.model.pretrained when given (ours, arcface_torch's, or an ONNX
    embedding model imported as a trainable graph)."""
    model_config = config.model
    if model_config.backbone == "onnx":
        return import_onnx(model_config.pretrained, model_config.num_features, model_config.pretrained_input or None,
                           gradient_checkpointing=model_config.gradient_checkpointing, dropout=model_config.dropout)
    try:  # backbones raise plain ValueError/TypeError; here they are about the config's model.* values
        model = get_backbone(model_config.backbone, num_features=model_config.num_features,
                             dropout=model_config.dropout, gradient_checkpointing=model_config.gradient_checkpointing,
                             **model_config.kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from err
    if model_config.pretrained:
        try:
            model.load_state_dict(load_weights(model_config.pretrained), strict=True)
        except (RuntimeError, ValueError) as err:  # a state_dict of another architecture, or no state_dict
            raise CheckpointError(f"model.pretrained = {model_config.pretrained}: {err}") from err
        log.info("backbone initialised from %s", model_config.pretrained)
    return model


def build_eval_sets(config: TrainConfig) -> list[PairSet]:
    """Verification sets for periodic evaluation."""
    eval_config = config.eval
    sets = [read_bin(path) for path in eval_config.bins]
    sets += [read_pairs_txt(path, root) for path, root in eval_config.pairs]
    if eval_config.synthetic:
        sets.append(synthetic_pairs(eval_config.synthetic_identities, eval_config.synthetic_pairs_per_fold,
                                    num_folds=5, seed=config.data.synthetic_seed))
    return sets


class Trainer:
    """One training run (one process of it when distributed)."""

    def __init__(self, config: TrainConfig, ctx: DistContext | None = None,
                 on_event: EventHandler | None = None) -> None:
        self.config = config
        self.ctx = ctx or DistContext()
        self.on_event = on_event or (lambda event: None)
        self.run_dir = Path(config.output_dir)
        if self.ctx.is_main:  # fail before reading data or building the model, not at the first checkpoint
            ensure_writable_dir(self.run_dir, "output_dir")
        torch.manual_seed(config.seed)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        self.device = self.ctx.device
        self.dataset = build_dataset(config)
        self.class_names = list(self.dataset.class_names)  # read (and checked) on every rank, before any collective
        if self.ctx.world_size > 1:  # equal batches on every process: bad images are replaced, not dropped
            self.dataset = SubstituteBadSamples(self.dataset)
        self.num_classes = int(self.dataset.num_classes)
        if config.data.batch_size % self.ctx.world_size:
            raise ConfigError(f"data.batch_size = {config.data.batch_size} must be divisible by the "
                             f"{self.ctx.world_size} processes")
        self.sampler = ResumableSampler(len(self.dataset), config.data.batch_size, config.seed,
                                        self.ctx.rank, self.ctx.world_size)
        start, stop = even_share(config.data.batch_size, self.ctx.rank, self.ctx.world_size)
        self.local_batch = stop - start
        self.head_rows = even_share(self.num_classes, self.ctx.rank, self.ctx.world_size)  # this rank's classes
        self.backbone = build_backbone(config).to(self.device)
        if config.model.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        broadcast_module(self.backbone, self.ctx)
        self.frozen_layers = freeze_leading_layers(self.backbone, config.model.freeze_layers)
        self.augment = augment_from_config(config)
        # the start model, fixed: what distillation pulls the embeddings of degraded faces towards
        self.teacher = frozen_copy(self.backbone) if config.optim.distill_weight > 0 else None
        self.head = self._build_head().to(self.device)
        # Same seed for construction (identical replicas); from here each rank draws its own dropout and
        # Partial FC streams.
        torch.manual_seed(rank_seed(config.seed, self.ctx.rank))
        self.optimizer = self._build_optimizer()
        optim = config.optim
        self.steps_per_epoch = max(1, self.sampler.batches_per_epoch // optim.accumulate)
        self.total_steps = optim.max_steps or optim.epochs * self.steps_per_epoch
        warmup = min(int(round(optim.warmup_epochs * self.steps_per_epoch)), max(0, self.total_steps - 1))
        self.schedule = PolySchedule(self.optimizer, self.total_steps, warmup, optim.poly_power)
        self.scaler = torch.amp.GradScaler("cuda", enabled=optim.precision == "fp16" and self.device.type == "cuda")
        if optim.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("optim.precision = 'fp16' needs CUDA; use 'bf16' on CPU")
        self.step = 0
        self.resumed_from: str | None = None  # what resume() was asked for; None: a fresh run
        self.nonfinite_in_row = 0
        self.skipped_steps = 0
        self.skipped_images = 0
        self.last_finite_loss = float("nan")
        self.eval_sets: list[PairSet] | None = None
        self.metrics = MetricsWriter(self.run_dir, enabled=self.ctx.is_main)

    # ------------------------------------------------------------------ construction
    def _build_head(self) -> nn.Module:
        """head.kind from the registry with its options; a sharded kind gets this process's class rows.

        Sets `centre_rows`, this process's [start, stop) of the global centre rows, and `weight_rows`, their
        global count (classes × centres per class: a sub-centre head has K rows per class and trains in one
        process only, it is refused under model parallelism)."""
        head_config = self.config.head
        kind, dim = head_config.kind, self.config.model.num_features
        entry = head_entry(kind)
        if self.ctx.world_size > 1 and not entry.sharded:
            raise ConfigError(f"head.kind = {kind!r} trains in one process only (its class centres are not "
                             f"sharded across the {self.ctx.world_size} processes)")
        options = head_options(head_config)
        if "seed" in entry.options and "seed" not in head_config.kwargs:
            options["seed"] = self.config.seed  # the run's seed starts the head's own random stream
        sharding = {"rows": self.head_rows, "group": self.ctx.group} if entry.sharded else {}
        head = get_head(kind, dim, self.num_classes, **sharding, **options)
        missing = missing_head_members(head)
        if missing:
            raise ConfigError(f"head.kind = {kind!r} does not satisfy the Head contract: it lacks {missing}")
        local_rows = head.weight.shape[0]
        self.centre_rows = self.head_rows if entry.sharded else (0, local_rows)
        self.weight_rows = self.num_classes if entry.sharded else local_rows
        if head_config.init == "spread":  # this process's rows of the evenly spread centres
            with torch.no_grad():
                head.weight.copy_(self._per_centre_row(spread_centres(self.num_classes, dim)))
        return head

    def _per_centre_row(self, centres: Tensor) -> Tensor:
        """(C, D) class centres as this process's rows of the head's weight (each repeated per sub-centre)."""
        start, stop = self.centre_rows
        return centres.repeat_interleave(self.weight_rows // self.num_classes, dim=0)[start:stop]

    def _build_optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        groups = [{"params": [param for param in self.backbone.parameters() if param.requires_grad],
                   "lr": optim.lr * optim.backbone_lr_scale},
                  {"params": [self.head.weight]}]
        if optim.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
        return SparseRowSGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)

    # ------------------------------------------------------------------ checkpoints
    def _head_param_index(self, optimizer_state: dict) -> int:
        """The head weight's index in an optimiser state_dict: the first parameter after the backbone's."""
        return len(optimizer_state["param_groups"][0]["params"])

    def save(self) -> Path | None:
        """Write a checkpoint (all ranks take part in the gathers; rank 0 writes).

        The class centres and their per-row optimiser state are saved in global class order, so a run
        resumes on any number of processes."""
        weight = gather_rows(self.head.weight.detach(), self.weight_rows, self.ctx)
        head_rows = gather_row_state(self.optimizer, self.head.weight, self.weight_rows, self.ctx)
        broadcast_module(self.backbone, self.ctx)  # BN statistics of rank 0, as DDP would keep them
        if not self.ctx.is_main:
            return None
        optimizer_state = self.optimizer.state_dict()
        head_other = split_row_state(optimizer_state, self._head_param_index(optimizer_state), head_rows)
        state = {
            "step": self.step, "optimizer": optimizer_state, "head_rows": head_rows, "head_other": head_other,
            "schedule": self.schedule.state_dict(), "sampler": self.sampler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": torch.get_rng_state(),
            "counters": {"skipped_steps": self.skipped_steps, "skipped_images": self.skipped_images,
                         "last_finite_loss": self.last_finite_loss},
        }
        weights = {f"backbone.{name}": value for name, value in self.backbone.state_dict().items()}
        weights["head.weight"] = weight
        # the head's other state (EMAs, random streams) is the same on every process: rank 0's is saved
        weights.update({f"head.{name}": value for name, value in self.head.named_buffers()})
        path = save_checkpoint(self.run_dir, self.step, weights, state,
                               {"world_size": self.ctx.world_size, "num_classes": self.num_classes},
                               self.config.keep_checkpoints)
        self.on_event(CheckpointEvent(self.step, path))
        return path

    def resume(self, where: str) -> bool:
        """Resume from 'auto' (newest usable checkpoint of the run; none at all starts fresh; only unusable
        ones is an error), 'none' (start fresh) or a checkpoint path."""
        self.resumed_from = where
        if where == "none":
            return False
        if where == "auto":
            found = load_latest(self.run_dir)
            if found is None:
                log.info("no checkpoint in %s: starting from scratch", self.run_dir)
                return False
            path, (weights, state, meta) = found
        else:
            path = Path(where)
            weights, state, meta = load_checkpoint(path)
        backbone_state = {name.removeprefix("backbone."): value for name, value in weights.items()
                          if name.startswith("backbone.")}
        try:
            self.backbone.load_state_dict(backbone_state, strict=True)
        except RuntimeError as err:  # torch lists every mismatched tensor; the first line says enough
            first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
            raise CheckpointError(f"{path}: checkpoint does not fit this run's backbone (model.* settings differ): "
                             f"{first}") from err
        head_weight = weights["head.weight"]
        if head_weight.shape[0] != self.weight_rows:
            raise CheckpointError(f"{path}: checkpoint has {head_weight.shape[0]} class-centre rows, this run's head "
                             f"has {self.weight_rows} ({self.num_classes} classes, head.kind = "
                             f"{self.config.head.kind!r})")
        self._restore_head_state(path, weights)
        start, stop = self.centre_rows
        with torch.no_grad():
            self.head.weight.copy_(head_weight[start:stop])
        optimizer_state = state["optimizer"]
        restore_row_state(optimizer_state, self._head_param_index(optimizer_state), state["head_other"],
                          state["head_rows"], self.centre_rows)
        self.optimizer.load_state_dict(optimizer_state)
        self.schedule.load_state_dict(state["schedule"])
        self.sampler.load_state_dict(state["sampler"])
        self.scaler.load_state_dict(state["scaler"])
        if int(meta.get("world_size", 1)) == self.ctx.world_size:
            torch.set_rng_state(state["rng"])
        else:
            log.warning("resuming a %s-process checkpoint on %d processes: weights, optimizer and data position "
                        "are restored exactly, random streams are not", meta.get("world_size"), self.ctx.world_size)
        counters = state["counters"]
        self.skipped_steps, self.skipped_images = counters["skipped_steps"], counters["skipped_images"]
        self.last_finite_loss = counters["last_finite_loss"]
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def _restore_head_state(self, path: Path, weights: dict[str, Tensor]) -> None:
        """Copy the head's buffers from a checkpoint; a checkpoint of a head with other state is refused."""
        buffers = dict(self.head.named_buffers())
        saved = {name.removeprefix("head."): value for name, value in weights.items()
                 if name.startswith("head.") and name != "head.weight"}
        if set(saved) != set(buffers) or any(saved[name].shape != buffers[name].shape for name in saved):
            raise CheckpointError(f"{path}: checkpoint head state {sorted(saved)} does not fit head.kind = "
                             f"{self.config.head.kind!r}, whose state is {sorted(buffers)}")
        with torch.no_grad():
            for name, buffer in buffers.items():
                buffer.copy_(saved[name])

    # ------------------------------------------------------------------ the loop
    def _loader(self) -> DataLoader:
        workers = self.config.data.workers
        return DataLoader(self.dataset, batch_size=self.local_batch, sampler=self.sampler, num_workers=workers,
                          collate_fn=collate, drop_last=False, persistent_workers=False,
                          generator=torch.Generator().manual_seed(loader_seed(self.config.seed, self.sampler.epoch)),
                          prefetch_factor=4 if workers > 0 else None)

    def _train_mode(self) -> None:
        """Backbone and head in training mode, frozen layers' normalisation statistics held."""
        self.backbone.train()
        hold_frozen_statistics(self.frozen_layers)

    def _inputs(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 batch → (clean, degraded) model input: degraded per sample by data.augment from a generator
        seeded by (seed, epoch, batch, rank), both mirrored by the same mask seeded from (seed, step, rank).
        Without augmentation both are the same tensor."""
        clean = images
        if self.augment.active:
            rng = augment_stream(self.config.seed, self.sampler.epoch, self.sampler.batches_done, self.ctx.rank)
            degraded = torch.from_numpy(self.augment.apply_batch(images.numpy().copy(), rng))
        else:
            degraded = images
        mask = None
        if self.config.data.flip:  # one mask for both, so the distillation target is the same view
            generator = torch.Generator().manual_seed(flip_seed(self.config.seed, self.step, self.ctx.rank))
            mask = torch.rand(len(images), generator=generator) < 0.5
        pair = [self._model_input(batch, mask) for batch in ((clean, degraded) if degraded is not clean else (clean,))]
        return pair[0], pair[-1]

    def _model_input(self, images: Tensor, flip_mask: Tensor | None) -> Tensor:
        """uint8 batch → float input on the device, mirrored where `flip_mask` says."""
        inputs = to_model_input(images)
        if flip_mask is not None:
            inputs[flip_mask] = torch.flip(inputs[flip_mask], dims=[3])
        inputs = inputs.to(self.device, non_blocking=True)
        if self.config.model.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _autocast(self):
        precision = self.config.optim.precision
        if precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def _grads_finite_and_clip(self) -> tuple[bool, float]:
        """(all gradients finite on every rank, total norm), clipping to optim.grad_clip when set."""
        grads = [param.grad.detach() for param in self.backbone.parameters() if param.grad is not None]
        backbone_sq = sum((grad.double().pow(2).sum() for grad in grads),
                          torch.zeros((), dtype=torch.float64, device=self.device))
        head_grad = self.head.weight.grad
        head_sq = torch.zeros((), dtype=torch.float64, device=self.device)
        if head_grad is not None:
            values = head_grad.coalesce().values() if head_grad.is_sparse else head_grad
            head_sq = values.detach().double().pow(2).sum()
        if self.ctx.group is not None:
            dist.all_reduce(head_sq, group=self.ctx.group)  # each rank holds other class centres
        squared = float(backbone_sq + head_sq)  # one device sync
        total = math.sqrt(squared) if math.isfinite(squared) else math.inf
        finite = all_agree(math.isfinite(total), self.ctx)
        clip = self.config.optim.grad_clip
        if finite and clip and total > clip:
            factor = clip / (total + 1e-6)
            for param in [*self.backbone.parameters(), self.head.weight]:
                if param.grad is not None:
                    param.grad.mul_(factor)
        return finite, total

    def evaluate(self) -> dict[str, float]:
        """Verification accuracy on the configured sets (rank 0 only; other ranks return {})."""
        if not self.ctx.is_main:
            return {}
        if self.eval_sets is None:
            self.eval_sets = build_eval_sets(self.config)
        results = {}
        self.backbone.eval()
        try:
            embedder = TorchEmbedder(self.backbone, self.device)
            for pair_set in self.eval_sets:
                evaluation = evaluate_pair_set(pair_set, embedder, flip=self.config.eval.flip,
                                               batch_size=self.config.eval.batch_size)
                verification = evaluation.verification
                results[pair_set.name] = verification.accuracy_mean
                self.on_event(EvalEvent(self.step, pair_set.name, verification.accuracy_mean,
                                        verification.accuracy_std))
        finally:
            self._train_mode()
        if results:
            self.metrics.write("eval", self.step, results)
        return results

    def _prepare_run_dir(self) -> None:
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        write_class_names(self.run_dir / LABELS_NAME, self.class_names)

    def train(self) -> TrainResult:
        """Run until total_steps; returns the run's summary (also written to run_dir/result.json).

        The metrics writer is closed however the run ends (done, diverged or an error)."""
        with self.metrics:
            return self._train()

    def _train(self) -> TrainResult:
        refuse_mixing_runs(self.run_dir, self.resumed_from)  # before anything is written into the folder
        self._prepare_run_dir()
        accumulate = self.config.optim.accumulate
        if self.step == 0 and self.config.head.init == "class_mean":
            self._init_centres_from_class_means()
        self._train_mode()
        self.head.train()
        started = time.perf_counter()
        throughput = Throughput()
        loss_value = float("nan")
        micro_batches = 0
        self.on_event(StartEvent(self.step, self.total_steps))
        while self.step < self.total_steps:
            for batch in require_samples(self._loader(), self.dataset):  # stops when nothing decodes
                if self.step >= self.total_steps:
                    break
                self.sampler.batches_done += 1
                self.skipped_images += batch.skipped
                if batch.skipped:
                    self.on_event(SkipEvent(self.step, batch.skipped))
                if len(batch.labels) != self.local_batch and self.ctx.world_size > 1:
                    raise RunFailed(f"step {self.step}: rank {self.ctx.rank} got {len(batch.labels)} of "
                                       f"{self.local_batch} samples; distributed batches must be equal")
                if len(batch.labels) == 0:
                    continue
                micro = self._forward_backward(batch)
                if micro.finite_loss:
                    loss_value = micro.loss
                micro_batches += 1
                throughput.add(len(batch.labels) * self.ctx.world_size)
                if micro_batches % accumulate and micro.finite_loss:
                    continue
                grad_norm = self._optimizer_step(micro, loss_value)
                micro_batches = 0
                self._after_step(loss_value, grad_norm, throughput)
            else:
                self.sampler.epoch += 1
                self.sampler.batches_done = 0
        return self._finish(loss_value, started)

    def _init_centres_from_class_means(self) -> None:
        """head.init = 'class_mean': every class centre starts at its identity's unit mean embedding under
        the starting backbone (this process's rows), so the first steps see no random-head shock."""
        started = time.perf_counter()
        means = class_mean_embeddings(self.backbone, self.dataset, self.num_classes, self.device,
                                      self.config.eval.batch_size, self.config.data.workers)
        with torch.no_grad():
            self.head.weight.copy_(self._per_centre_row(means).to(self.head.weight))
        log.info("class centres set to the mean embedding of each identity (%d classes, %.0f s)",
                 self.num_classes, time.perf_counter() - started)

    def _forward_backward(self, batch: Batch) -> _MicroBatch:
        """Backbone and head on one micro-batch, and its share of the gradient when the loss is finite.

        During optim.head_only_steps the backbone runs without gradients in eval mode (only the head learns);
        with optim.distill_weight the loss adds the distance to the start model's embedding of the clean face."""
        clean, degraded = self._inputs(batch.images)
        head_only = self.step < self.config.optim.head_only_steps
        with self._autocast():
            if head_only:
                self.backbone.eval()
                with torch.no_grad():
                    embeddings = self.backbone(degraded)
                self._train_mode()
            else:
                embeddings = self.backbone(degraded)
        # every rank learns whether any rank's embeddings are non-finite before the head (whose input
        # check would raise, and whose collectives a rank that raised would leave the others waiting in)
        finite_embeddings = all_agree(bool(torch.isfinite(embeddings).all()), self.ctx)
        if not finite_embeddings:
            return _MicroBatch(float("nan"), False, False)
        loss = self.head(embeddings.float(), batch.labels.to(self.device))
        if self.teacher is not None and not head_only:
            with torch.no_grad(), self._autocast():
                target = self.teacher(clean)
            loss = loss + self.config.optim.distill_weight * distillation_loss(embeddings.float(), target.float())
        if not all_agree(bool(torch.isfinite(loss)), self.ctx):
            return _MicroBatch(float("nan"), True, False)
        self.scaler.scale(loss / self.config.optim.accumulate).backward()
        return _MicroBatch(float(loss.detach()), True, True)

    def _optimizer_step(self, micro: _MicroBatch, loss_value: float) -> float:
        """Apply the accumulated gradients, or skip the step when anything was non-finite (raising
        TrainingDiverged after optim.nan_patience skips in a row); returns the gradient norm."""
        grads_ok, grad_norm = False, math.inf
        if micro.finite_loss:  # every rank agrees on it, so all take part in these collectives or none does
            all_reduce_gradients([param for param in self.backbone.parameters() if param.requires_grad], self.ctx)
            self.scaler.unscale_(self.optimizer)
            grads_ok, grad_norm = self._grads_finite_and_clip()
        if grads_ok:
            self.scaler.step(self.optimizer)
            self.last_finite_loss = loss_value
            self.nonfinite_in_row = 0
        else:
            self._skip_step(micro)
        if micro.finite_loss:  # a step without backward records no inf checks for the scaler
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.schedule.step()
        return grad_norm

    def _skip_step(self, micro: _MicroBatch) -> None:
        self.skipped_steps += 1
        self.nonfinite_in_row += 1
        self.on_event(NonfiniteEvent(self.step, self.schedule.lr))
        what = "embedding" if not micro.finite_embeddings else "loss" if not micro.finite_loss else "gradient"
        log.warning("step %d: non-finite %s, step skipped", self.step, what)
        if self.nonfinite_in_row >= self.config.optim.nan_patience:
            raise TrainingDiverged(
                f"stopped at step {self.step}: {self.nonfinite_in_row} non-finite steps in a row "
                f"(lr {self.schedule.lr:.6g}, last finite loss {self.last_finite_loss:.6g}); "
                f"the last good checkpoint in {self.run_dir / 'checkpoints'} is intact")

    def _after_step(self, loss_value: float, grad_norm: float, throughput: Throughput) -> None:
        """Progress event and metrics every log_every steps, periodic evaluation and checkpoints."""
        config = self.config
        if self.step % config.log_every == 0 or self.step == self.total_steps:
            rate = throughput.rate()
            self.on_event(StepEvent(self.step, self.total_steps, self.sampler.epoch, loss_value, self.schedule.lr,
                                    rate, grad_norm))
            self.metrics.write("train", self.step, {"loss": loss_value, "lr": self.schedule.lr, "images_per_s": rate},
                               epoch=self.sampler.epoch)
            throughput.reset()
        if config.eval.every_steps and self.step % config.eval.every_steps == 0 and self.step < self.total_steps:
            self.evaluate()
        if config.checkpoint_every and self.step % config.checkpoint_every == 0:
            self.save()

    def _finish(self, loss_value: float, started: float) -> TrainResult:
        """Final checkpoint and evaluation (both counted in the run's seconds), export and result.json."""
        if self.config.checkpoint_every and self.step % self.config.checkpoint_every:
            self.save()  # the final step, unless the loop just saved it
        verification = self.evaluate()
        seconds = time.perf_counter() - started
        result = TrainResult(self.run_dir, self.step, loss_value, seconds, self.skipped_steps, self.skipped_images,
                             verification)
        if self.ctx.is_main:
            self._export()
            summary = {"steps": self.step, "final_loss": loss_value, "seconds": seconds,
                       "skipped_steps": self.skipped_steps, "skipped_images": self.skipped_images,
                       "verification": verification}
            (self.run_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.on_event(DoneEvent(result))
        return result

    def _export(self) -> None:
        model_config = self.config.model
        kwargs = {"program": self.backbone.program} if isinstance(self.backbone, OnnxBackbone) else model_config.kwargs
        folder = save_backbone(self.backbone.eval(), model_config.backbone, self.run_dir / "model", **kwargs)
        if self.config.export_onnx:
            from marginface.infer.export import export_onnx

            export_onnx(self.backbone.float().cpu(), folder / "model.onnx")
        self._train_mode()
