"""Benchmark: where a training step's time goes — data, backbone forward+backward, head, gradient sync,
optimizer — for MobileFaceNet and iResNet-50 on this CPU, single process and 2 gloo processes.

Data come from a RecordIO set (synthetic faces packed with `data pack`, as real training reads
insightface .rec files) through a DataLoader with 2 workers (1 per process when 2 processes share the
2 cores). The head is ArcFace over 10,000 classes. "data" is the time the loop waits for the next batch
plus the uint8 → float conversion; the target is that everything except the backbone stays ≤ 10 % of
the step.

    python bench/train.py                 # writes bench/results/train.json
    python bench/train.py --models mbf --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from marginface.backbones import get_backbone
from marginface.data import RecordIODataset, collate, encode_image, synthetic_face, to_model_input
from marginface.data.recordio import write_face_records
from marginface.heads import ArcFace
from marginface.train.distributed import DistContext, all_reduce_gradients
from marginface.train.optim import SparseRowSGD
from marginface.train.sampler import ResumableSampler

CLASSES = 10_000
PHASES = ("data", "backbone", "head", "sync", "optimizer")


def _pack(out: Path, images: int) -> None:
    write_face_records(out, ((encode_image(synthetic_face(0, i % 100, i)), i % 100) for i in range(images)), 100)


def _measure(rec: str, model_name: str, batch: int, steps: int, ctx: DistContext, workers: int) -> dict:
    torch.manual_seed(0)
    dataset = RecordIODataset(rec)
    sampler = ResumableSampler(len(dataset), batch, rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(dataset, batch_size=batch // ctx.world_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate, prefetch_factor=4, persistent_workers=True)
    backbone = get_backbone(model_name).to(memory_format=torch.channels_last)
    head = ArcFace(512, CLASSES, group=ctx.group)
    optimizer = SparseRowSGD([*backbone.parameters(), head.weight], lr=0.01)
    times = {phase: [] for phase in PHASES}
    batches = iter(loader)
    for step in range(steps + 1):  # step 0 warms up
        t0 = time.perf_counter()
        images = next(batches)
        x = to_model_input(images.images).contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        embeddings = backbone(x)
        t2 = time.perf_counter()
        leaf = embeddings.detach().requires_grad_(True)
        head(leaf, images.labels).backward()
        t3 = time.perf_counter()
        embeddings.backward(leaf.grad)
        t4 = time.perf_counter()
        all_reduce_gradients(list(backbone.parameters()), ctx)
        t5 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        if step:
            for phase, seconds in zip(PHASES, (t1 - t0, (t2 - t1) + (t4 - t3), t3 - t2, t5 - t4, t6 - t5),
                                      strict=True):
                times[phase].append(seconds)
    return {phase: statistics.median(values) for phase, values in times.items()}


def _worker(rank: int, port: int, rec: str, model_name: str, batch: int, steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistContext(rank, 2, torch.device("cpu"), dist.group.WORLD)
    result = _measure(rec, model_name, batch, steps, ctx, workers=1)
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def _report(label: str, phases: dict, batch: int) -> dict:
    total = sum(phases.values())
    outside = total - phases["backbone"]
    shares = ", ".join(f"{p} {100 * phases[p] / total:4.1f} %" for p in PHASES)
    print(f"{label:28s} step {total:6.2f} s ({batch / total:5.1f} img/s): {shares}; "
          f"outside the backbone {100 * outside / total:4.1f} %", flush=True)
    return {"label": label, "batch": batch, "step_s": total, "phases_s": phases,
            "outside_backbone_share": outside / total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mbf", "r50"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()
    batches = {"mbf": 64, "r50": 16}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rec"
        _pack(rec, 1200)
        for name in args.models:
            batch = batches.get(name, 32)
            torch.set_num_threads(2)
            phases = _measure(str(rec), name, batch, args.steps, DistContext(), workers=2)
            rows.append(_report(f"{name} 1 process, 2 workers", phases, batch))
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            out = Path(tmp) / "dist.json"
            mp.spawn(_worker, args=(port, str(rec), name, batch, args.steps, str(out)), nprocs=2, join=True)
            rows.append(_report(f"{name} 2 gloo processes", json.loads(out.read_text()), batch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"classes": CLASSES, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
