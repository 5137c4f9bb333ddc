"""Benchmark: forward + backward of the margin loss vs the matmul floor and pytorch-metric-learning.

For each class count C the same run measures, round-robin in one process:
  floor    the three matmuls any head must do: x·Wᵀ, G·W and Gᵀ·x (B×D, C×D, B×C operands)
  full     marginface ArcFace, full mode
  chunked  marginface ArcFace, chunk_size = 8192
  pml      pytorch_metric_learning.losses.ArcFaceLoss (same B, D, C)
  curricularface, adaface, magface, elasticface   the adaptive heads, full mode
  NAME_chunked                        the same, chunk_size = 8192
and reports each one's median time / the floor's. Peak memory is measured in a fresh subprocess per
method: after a warm-up step (weights and their gradient resident) the high-water RSS mark (VmHWM) is
reset, one more step runs, and its peak minus the RSS before it is the memory a step needs beyond the
weights and their gradient. glibc is told to map every allocation of 64 KiB or more separately, so that
freed tensors leave RSS and cannot hide inside a reused arena.

    python bench/heads.py                       # C = 10k, 100k, 1M; writes bench/results/heads.json
    python bench/heads.py --classes 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BATCH, DIM, CHUNK = 256, 512, 8192
# Every allocation of 64 KiB or more gets its own mapping, returned to the OS when freed: RSS then tracks
# the live tensors instead of whatever glibc's arenas kept from earlier steps.
_MALLOC_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
ADAPTIVE = ("curricularface", "adaface", "magface", "elasticface")
METHODS = ("floor", "full", "chunked", "pml", *ADAPTIVE, *(f"{name}_chunked" for name in ADAPTIVE))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water RSS mark (VmHWM) so that set-up allocations do not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM missing from /proc/self/status")


def _make_step(method: str, classes: int):
    """Return a zero-argument callable running one forward + backward of `method`."""
    torch.manual_seed(0)
    x = torch.randn(BATCH, DIM, requires_grad=True)
    labels = torch.randint(0, classes, (BATCH,))
    if method == "floor":
        w = torch.randn(classes, DIM) * 0.01
        xd = x.detach()
        kept: dict[str, torch.Tensor | None] = {"grad_w": None}  # the weight-gradient product stays alive

        def step() -> None:
            kept["grad_w"] = None
            logits = xd @ w.t()
            _ = logits @ w
            kept["grad_w"] = logits.t() @ xd
        return step
    if method in ("full", "chunked"):
        from marginface.heads import ArcFace

        head = ArcFace(DIM, classes, chunk_size=CHUNK if method == "chunked" else None)
        params = [head.weight]

        def loss():
            return head(x, labels)
    elif method.removesuffix("_chunked") in ADAPTIVE:
        from marginface.heads import get_head

        head = get_head(method.removesuffix("_chunked"), DIM, classes,
                        chunk_size=CHUNK if method.endswith("_chunked") else None)
        params = [head.weight]

        def loss():
            return head(x, labels)
    else:
        from pytorch_metric_learning.losses import ArcFaceLoss

        head = ArcFaceLoss(classes, DIM, margin=28.6479, scale=64)
        params = [head.W]

        def loss():
            return head(x, labels)

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        loss().backward()
    return step


def _memory_worker(method: str, classes: int) -> None:
    step = _make_step(method, classes)
    step()  # warm-up: the weight gradient now exists, as it does between training steps
    _reset_peak_rss()
    base = _rss_bytes()
    step()
    print(json.dumps({"extra_bytes": max(0, _peak_rss_bytes() - base)}))


def _time_all(classes: int, methods: list[str], repeats: int) -> dict[str, list[float]]:
    steps = {m: _make_step(m, classes) for m in methods}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for m, step in steps.items():
            start = time.perf_counter()
            step()
            times[m].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-pml-above", type=int, default=1_000_000,
                        help="leave the peer out for C above this (it needs several B×C matrices)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "heads.json")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="only these (default: every method)")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure only the peak memory beyond weights+grad (no timing, no floor ratio)")
    parser.add_argument("--memory-worker", nargs=2, metavar=("METHOD", "C"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        _memory_worker(args.memory_worker[0], int(args.memory_worker[1]))
        return 0

    rows = []
    for classes in args.classes:
        methods = [m for m in (args.methods or METHODS) if not (m == "pml" and classes > args.skip_pml_above)]
        if not args.memory_only and "floor" not in methods:
            methods = ["floor", *methods]  # every ratio is to the floor measured in the same run
        repeats = args.repeats if classes < 1_000_000 else max(2, args.repeats // 2)
        times = None if args.memory_only else _time_all(classes, methods, repeats)
        floor = None if times is None else statistics.median(times["floor"])
        for m in methods:
            out = subprocess.run([sys.executable, __file__, "--memory-worker", m, str(classes)],
                                 capture_output=True, text=True, check=True, env=_MALLOC_ENV)
            extra = json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]
            if times is None:
                rows.append({"classes": classes, "method": m, "extra_memory_mib": extra / 2**20})
                print(f"C={classes:>9,} {m:>22}: peak beyond weights+grad {extra / 2**20:8.1f} MiB", flush=True)
                continue
            median = statistics.median(times[m])
            row = {"classes": classes, "method": m, "median_s": median, "min_s": min(times[m]),
                   "ratio_to_floor": median / floor, "extra_memory_mib": extra / 2**20}
            rows.append(row)
            print(f"C={classes:>9,} {m:>22}: {median:8.3f} s  {median / floor:5.2f}x floor  "
                  f"peak beyond weights+grad {extra / 2**20:8.1f} MiB", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"batch": BATCH, "dim": DIM, "chunk_size": CHUNK, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
