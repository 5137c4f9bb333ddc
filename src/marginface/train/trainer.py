"""The training loop: data → backbone → margin head → optimiser, with checkpoints, resume, NaN guard,
periodic verification, CSV / TensorBoard logs and the exported model at the end.

The library reports progress through `on_event(dict)` callbacks ({"type": "start" | "step" | "eval" |
"checkpoint" | "skip" | "nonfinite" | "done", ...}); "start" comes before the first step with the step a
resumed run continues from, so a progress bar can begin there; it never prints.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from marginface.backbones import get_backbone
from marginface.backbones import save as save_backbone
from marginface.data.folder import ImageFolderDataset
from marginface.data.labels import LABELS_NAME, write_class_names
from marginface.data.pairs import PairSet, read_bin, read_pairs_txt
from marginface.data.recordio import RecordIODataset
from marginface.data.samples import SubstituteBadSamples, collate, require_samples
from marginface.data.synthetic import SyntheticFaces, synthetic_pairs
from marginface.data.transforms import to_model_input
from marginface.eval.pipeline import evaluate_pair_set
from marginface.fileio import ensure_writable_dir
from marginface.heads import MarginHead, Softmax
from marginface.infer.embedder import TorchEmbedder
from marginface.train.checkpoint import load_checkpoint, load_latest, save_checkpoint
from marginface.train.config import TrainConfig
from marginface.train.distributed import (
    DistContext,
    ShardedMarginHead,
    all_agree,
    all_reduce_gradients,
    broadcast_module,
    even_share,
    gather_rows,
)
from marginface.train.optim import SparseRowSGD
from marginface.train.sampler import ResumableSampler
from marginface.train.schedule import PolySchedule

log = logging.getLogger(__name__)
EventHandler = Callable[[dict], None]


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the message names the step, the lr and the last finite loss."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    final_loss: float
    seconds: float
    skipped_steps: int
    skipped_images: int
    verification: dict[str, float] = field(default_factory=dict)


def build_dataset(config: TrainConfig) -> Dataset:
    """The training dataset named by config.data (flip is applied per batch by the trainer)."""
    data = config.data
    if data.kind == "synthetic":
        return SyntheticFaces(data.synthetic_identities, data.synthetic_samples, seed=data.synthetic_seed)
    if data.kind == "folder":
        return ImageFolderDataset(data.path, on_error=data.on_error)
    return RecordIODataset(data.path, on_error=data.on_error)


def build_backbone(config: TrainConfig) -> nn.Module:
    """The backbone, initialised from config.model.pretrained when given (ours or arcface_torch's)."""
    m = config.model
    model = get_backbone(m.backbone, num_features=m.num_features, dropout=m.dropout,
                         gradient_checkpointing=m.gradient_checkpointing, **m.kwargs)
    if m.pretrained:
        model.load_state_dict(load_backbone_weights(m.pretrained), strict=True)
        log.info("backbone initialised from %s", m.pretrained)
    return model


def load_backbone_weights(path: str | Path) -> dict[str, Tensor]:
    """A backbone state_dict from an exported model directory / safetensors file, or a torch .pth / .pt
    (arcface_torch's backbone.pth or model.pt, possibly wrapped in {'state_dict': ...})."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_eval_sets(config: TrainConfig) -> list[PairSet]:
    """Verification sets for periodic evaluation."""
    e = config.eval
    sets = [read_bin(p) for p in e.bins] + [read_pairs_txt(p, root) for p, root in e.pairs]
    if e.synthetic:
        sets.append(synthetic_pairs(e.synthetic_identities, e.synthetic_pairs_per_fold, num_folds=5,
                                    seed=config.data.synthetic_seed))
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
        if self.ctx.world_size > 1:  # equal batches on every process: bad images are replaced, not dropped
            self.dataset = SubstituteBadSamples(self.dataset)
        self.num_classes = int(self.dataset.num_classes)
        if config.data.batch_size % self.ctx.world_size:
            raise ValueError(f"data.batch_size = {config.data.batch_size} must be divisible by the "
                             f"{self.ctx.world_size} processes")
        self.sampler = ResumableSampler(len(self.dataset), config.data.batch_size, config.seed,
                                        self.ctx.rank, self.ctx.world_size)
        start, stop = even_share(config.data.batch_size, self.ctx.rank, self.ctx.world_size)
        self.local_batch = stop - start
        self.backbone = build_backbone(config).to(self.device)
        if config.model.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        broadcast_module(self.backbone, self.ctx)
        self.head = self._build_head().to(self.device)
        # Same seed for construction (identical replicas); from here each rank draws its own dropout and
        # Partial FC streams.
        torch.manual_seed(config.seed + 1_000_003 * self.ctx.rank)
        self.optimizer = self._build_optimizer()
        o = config.optim
        self.steps_per_epoch = max(1, self.sampler.batches_per_epoch // o.accumulate)
        self.total_steps = o.max_steps or o.epochs * self.steps_per_epoch
        warmup = min(int(round(o.warmup_epochs * self.steps_per_epoch)), max(0, self.total_steps - 1))
        self.schedule = PolySchedule(self.optimizer, self.total_steps, warmup, o.poly_power)
        self.scaler = torch.amp.GradScaler("cuda", enabled=o.precision == "fp16" and self.device.type == "cuda")
        if o.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("optim.precision = 'fp16' needs CUDA; use 'bf16' on CPU")
        self.step = 0
        self.nonfinite_in_row = 0
        self.skipped_steps = 0
        self.skipped_images = 0
        self.last_finite_loss = float("nan")
        self.eval_sets: list[PairSet] | None = None
        self._writer = None

    # ------------------------------------------------------------------ construction
    def _build_head(self) -> nn.Module:
        h = self.config.head
        kwargs = dict(s=h.s, m1=h.m1, m2=h.m2, m3=h.m3, chunk_size=h.chunk_size, sample_rate=h.sample_rate,
                      detach_margin=h.detach_margin)
        dim = self.config.model.num_features
        if h.kind == "softmax":
            if self.ctx.world_size > 1:
                raise ValueError("head.kind = 'softmax' trains in one process only (its classes are not sharded)")
            return Softmax(dim, self.num_classes, bias=False)
        if self.ctx.world_size > 1:
            return ShardedMarginHead(dim, self.num_classes, self.ctx, **kwargs)
        return MarginHead(dim, self.num_classes, **kwargs)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        groups = [{"params": [p for p in self.backbone.parameters() if p.requires_grad]},
                  {"params": [self.head.weight]}]
        if o.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        return SparseRowSGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    # ------------------------------------------------------------------ checkpoints
    def _head_state_global(self) -> tuple[Tensor, dict[str, Tensor]]:
        """Class centres and their optimiser state (momentum / Adam moments) in global class order."""
        weight = gather_rows(self.head.weight.detach(), self.num_classes, self.ctx)
        state = self.optimizer.state.get(self.head.weight, {})
        rows = {k: gather_rows(v, self.num_classes, self.ctx) for k, v in state.items()
                if torch.is_tensor(v) and v.shape == self.head.weight.shape}
        return weight, rows

    def save(self) -> Path | None:
        """Write a checkpoint (all ranks take part in the gathers; rank 0 writes)."""
        weight, head_rows = self._head_state_global()
        broadcast_module(self.backbone, self.ctx)  # BN statistics of rank 0, as DDP would keep them
        if not self.ctx.is_main:
            return None
        optimizer_state = self.optimizer.state_dict()
        head_index = len(optimizer_state["param_groups"][0]["params"])
        head_other = {k: v for k, v in optimizer_state["state"].pop(head_index, {}).items() if k not in head_rows}
        state = {
            "step": self.step, "optimizer": optimizer_state, "head_rows": head_rows, "head_other": head_other,
            "schedule": self.schedule.state_dict(), "sampler": self.sampler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": torch.get_rng_state(),
            "counters": {"skipped_steps": self.skipped_steps, "skipped_images": self.skipped_images,
                         "last_finite_loss": self.last_finite_loss},
        }
        weights = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        weights["head.weight"] = weight
        path = save_checkpoint(self.run_dir, self.step, weights, state,
                               {"world_size": self.ctx.world_size, "num_classes": self.num_classes},
                               self.config.keep_checkpoints)
        self.on_event({"type": "checkpoint", "step": self.step, "path": str(path)})
        return path

    def resume(self, where: str) -> bool:
        """Resume from 'auto' (newest usable checkpoint of the run; none at all starts fresh; only unusable
        ones is an error), 'none' (start fresh) or a checkpoint path."""
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
        backbone_state = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
        self.backbone.load_state_dict(backbone_state, strict=True)
        head_weight = weights["head.weight"]
        if head_weight.shape[0] != self.num_classes:
            raise ValueError(f"{path}: checkpoint has {head_weight.shape[0]} classes, the data has {self.num_classes}")
        start, stop = self._shard_rows()
        with torch.no_grad():
            self.head.weight.copy_(head_weight[start:stop])
        optimizer_state = state["optimizer"]
        head_index = len(optimizer_state["param_groups"][0]["params"])
        head_state = dict(state["head_other"])
        head_state.update({k: v[start:stop].clone() for k, v in state["head_rows"].items()})
        if head_state:
            optimizer_state["state"][head_index] = head_state
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

    def _shard_rows(self) -> tuple[int, int]:
        if isinstance(self.head, ShardedMarginHead):
            return self.head.start, self.head.stop
        return 0, self.num_classes

    # ------------------------------------------------------------------ the loop
    def _loader(self) -> DataLoader:
        workers = self.config.data.workers
        return DataLoader(self.dataset, batch_size=self.local_batch, sampler=self.sampler, num_workers=workers,
                          collate_fn=collate, drop_last=False, persistent_workers=False,
                          generator=torch.Generator().manual_seed(self.config.seed + self.sampler.epoch),
                          prefetch_factor=4 if workers > 0 else None)

    def _inputs(self, images: Tensor) -> Tensor:
        """uint8 batch → model input, mirrored per sample by a generator seeded from (seed, step)."""
        x = to_model_input(images)
        if self.config.data.flip:
            gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step * 7919 + self.ctx.rank)
            mask = torch.rand(len(x), generator=gen) < 0.5
            x[mask] = torch.flip(x[mask], dims=[3])
        x = x.to(self.device, non_blocking=True)
        if self.config.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self):
        precision = self.config.optim.precision
        if precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def _grads_finite_and_clip(self) -> tuple[bool, float]:
        """(all gradients finite on every rank, total norm), clipping to optim.grad_clip when set."""
        grads = [p.grad.detach() for p in self.backbone.parameters() if p.grad is not None]
        backbone_sq = sum((g.double().pow(2).sum() for g in grads), torch.zeros((), dtype=torch.float64,
                                                                               device=self.device))
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
            for p in [*self.backbone.parameters(), self.head.weight]:
                if p.grad is not None:
                    p.grad.mul_(factor)
        return finite, total

    def _log_row(self, row: dict) -> None:
        if not self.ctx.is_main:
            return
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["kind", "step", "epoch", "name", "value"])
            if new:
                writer.writeheader()
            for name, value in row["values"].items():
                writer.writerow({"kind": row["kind"], "step": row["step"], "epoch": row.get("epoch", ""),
                                 "name": name, "value": value})
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self._writer = False
                log.info("tensorboard is not installed: scalars go to metrics.csv only")
        if self._writer:
            for name, value in row["values"].items():
                self._writer.add_scalar(f"{row['kind']}/{name}", value, row["step"])

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
                results[pair_set.name] = evaluation.verification.accuracy_mean
                self.on_event({"type": "eval", "step": self.step, "set": pair_set.name,
                               "accuracy": evaluation.verification.accuracy_mean,
                               "std": evaluation.verification.accuracy_std})
        finally:
            self.backbone.train()
        if results:
            self._log_row({"kind": "eval", "step": self.step, "values": results})
        return results

    def _prepare_run_dir(self) -> None:
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        dataset = getattr(self.dataset, "dataset", self.dataset)  # unwrap SubstituteBadSamples
        write_class_names(self.run_dir / LABELS_NAME, dataset.class_names)

    def train(self) -> TrainResult:
        """Run until total_steps; returns the run's summary (also written to run_dir/result.json)."""
        self._prepare_run_dir()
        o, cfg = self.config.optim, self.config
        self.backbone.train()
        self.head.train()
        started = time.perf_counter()
        window_start, window_images = time.perf_counter(), 0
        loss_value = float("nan")
        micro = 0
        self.on_event({"type": "start", "step": self.step, "total": self.total_steps})
        while self.step < self.total_steps:
            for batch in require_samples(self._loader(), self.dataset):  # stops when nothing decodes
                if self.step >= self.total_steps:
                    break
                self.sampler.batches_done += 1
                self.skipped_images += batch.skipped
                if batch.skipped:
                    self.on_event({"type": "skip", "step": self.step, "images": batch.skipped})
                if len(batch.labels) != self.local_batch and self.ctx.world_size > 1:
                    raise RuntimeError(f"step {self.step}: rank {self.ctx.rank} got {len(batch.labels)} of "
                                       f"{self.local_batch} samples; distributed batches must be equal")
                if len(batch.labels) == 0:
                    continue
                with self._autocast():
                    embeddings = self.backbone(self._inputs(batch.images))
                # every rank learns whether any rank's embeddings are non-finite before the head (whose input
                # check would raise, and whose collectives a rank that raised would leave the others waiting in)
                finite_embeddings = all_agree(bool(torch.isfinite(embeddings).all()), self.ctx)
                finite_loss = False
                if finite_embeddings:
                    loss = self.head(embeddings.float(), batch.labels.to(self.device))
                    finite_loss = all_agree(bool(torch.isfinite(loss)), self.ctx)
                if finite_loss:
                    self.scaler.scale(loss / o.accumulate).backward()
                    loss_value = float(loss.detach())
                micro += 1
                window_images += len(batch.labels) * self.ctx.world_size
                if micro % o.accumulate and finite_loss:
                    continue
                grads_ok, grad_norm = False, math.inf
                if finite_loss:  # every rank agrees on it, so all take part in these collectives or none does
                    all_reduce_gradients([p for p in self.backbone.parameters() if p.requires_grad], self.ctx)
                    self.scaler.unscale_(self.optimizer)
                    grads_ok, grad_norm = self._grads_finite_and_clip()
                if grads_ok:
                    self.scaler.step(self.optimizer)
                    self.last_finite_loss = loss_value
                    self.nonfinite_in_row = 0
                else:
                    self.skipped_steps += 1
                    self.nonfinite_in_row += 1
                    self.on_event({"type": "nonfinite", "step": self.step, "lr": self.schedule.lr})
                    what = "embedding" if not finite_embeddings else "loss" if not finite_loss else "gradient"
                    log.warning("step %d: non-finite %s, step skipped", self.step, what)
                    if self.nonfinite_in_row >= o.nan_patience:
                        raise TrainingDiverged(
                            f"stopped at step {self.step}: {self.nonfinite_in_row} non-finite steps in a row "
                            f"(lr {self.schedule.lr:.6g}, last finite loss {self.last_finite_loss:.6g}); "
                            f"the last good checkpoint in {self.run_dir / 'checkpoints'} is intact")
                if finite_loss:  # a step without backward records no inf checks for the scaler
                    self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                micro = 0
                self.step += 1
                self.schedule.step()
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    rate = window_images / elapsed if elapsed > 0 else 0.0
                    event = {"type": "step", "step": self.step, "total": self.total_steps,
                             "epoch": self.sampler.epoch, "loss": loss_value, "lr": self.schedule.lr,
                             "images_per_s": rate, "grad_norm": grad_norm}
                    self.on_event(event)
                    self._log_row({"kind": "train", "step": self.step, "epoch": self.sampler.epoch,
                                   "values": {"loss": loss_value, "lr": self.schedule.lr, "images_per_s": rate}})
                    window_start, window_images = time.perf_counter(), 0
                if cfg.eval.every_steps and self.step % cfg.eval.every_steps == 0 and self.step < self.total_steps:
                    self.evaluate()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
            else:
                self.sampler.epoch += 1
                self.sampler.batches_done = 0
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every:
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
            if self._writer:
                self._writer.close()
        self.on_event({"type": "done", "result": result})
        return result

    def _export(self) -> None:
        m = self.config.model
        folder = save_backbone(self.backbone.eval(), m.backbone, self.run_dir / "model", **m.kwargs)
        if self.config.export_onnx:
            from marginface.infer.export import export_onnx

            export_onnx(self.backbone.float().cpu(), folder / "model.onnx")
        self.backbone.train()
