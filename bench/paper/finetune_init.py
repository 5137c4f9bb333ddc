"""Does initialising the head's class centres from the pretrained model's mean embeddings help fine-tuning?
ArcFace fine-tunes of the shared MobileFaceNet with `head.init: class_mean` beside the loss table's ArcFace
rows (`head.init: normal`, N(0, 0.01²) centres; same config, data and seeds), clean and degraded.

    python bench/paper/finetune_init.py --seeds 0 1      # → bench/results/paper/finetune_init.{json,md}

The `normal` rows are read from bench/results/paper/finetune_loss_table.json (run that table first); the
class-mean runs train through `marginface train configs/paper/finetune_arcface.yaml --set head.init=class_mean`
into runs/paper/finetune_init/ and are skipped when finished, or carried from the committed report when
their folder is gone and the config digest still matches (as loss_table.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_table import ROOT, config_digest, degraded_accuracy  # noqa: E402

CONFIG = ROOT / "configs" / "paper" / "finetune_arcface.yaml"
OVERRIDES = ["head.init=class_mean"]
DEGRADED = ("downscale:14", "blur:4")


def class_mean_run(seed: int, runs: Path, carried: dict[int, dict]) -> dict:
    """Train (unless finished or carried) and evaluate one class-mean-initialised ArcFace fine-tune."""
    out = runs / f"arcface_class_mean_seed{seed}"
    digest = config_digest("finetune", "arcface", OVERRIDES)
    if not (out / "result.json").is_file() and carried.get(seed, {}).get("config_sha256") == digest:
        return {**carried[seed], "carried": True}
    if not (out / "result.json").is_file():
        command = [sys.executable, "-m", "marginface", "train", str(CONFIG), "--set", f"seed={seed}",
                   "--set", f"output_dir={out}", *[part for item in OVERRIDES for part in ("--set", item)]]
        print(f"[{time.strftime('%H:%M:%S')}] class_mean seed {seed}: {' '.join(command[2:])}", flush=True)
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    result = json.loads((out / "result.json").read_text())
    return {"init": "class_mean", "seed": seed, "config_sha256": digest,
            "accuracy": next(iter(result["verification"].values())), "final_loss": result["final_loss"],
            "degraded": {spec: degraded_accuracy(out, spec, CONFIG) for spec in DEGRADED},
            "train_seconds": result["seconds"], "run_dir": str(out.relative_to(ROOT))}


def normal_runs(table: Path, seeds: list[int]) -> list[dict]:
    """The loss table's ArcFace records for `seeds` (the same fine-tune with N(0, 0.01²) centres)."""
    records = [r for r in json.loads(table.read_text())["runs"] if r["loss"] == "arcface" and r["seed"] in seeds]
    missing = sorted(set(seeds) - {r["seed"] for r in records})
    if missing:
        listed = " ".join(map(str, seeds))
        raise SystemExit(f"{table} has no ArcFace run for seed(s) {missing}: run "
                         f"`python bench/paper/loss_table.py --table finetune --seeds {listed}` first")
    return [{"init": "normal", "seed": r["seed"], "accuracy": r["accuracy"], "final_loss": r["final_loss"],
             "degraded": {spec: r["degraded"][spec] for spec in DEGRADED}, "train_seconds": r["train_seconds"],
             "run_dir": r["run_dir"]} for r in records]


def markdown(records: list[dict]) -> str:
    """Mean (per seed) of clean and degraded accuracy and the final training loss, per initialisation."""
    lines = ["| head init | seeds | clean % (per seed) | 14 px % (per seed) | blur σ 4 % (per seed) "
             "| final train loss |",
             "|---|---|---|---|---|---|"]
    for init in ("normal", "class_mean"):
        rows = sorted((r for r in records if r["init"] == init), key=lambda r: r["seed"])

        def cell(values: list[float]) -> str:
            return f"{100 * statistics.fmean(values):.2f} ({' '.join(f'{100 * v:.2f}' for v in values)})"

        lines.append(f"| {init} | {len(rows)} | {cell([r['accuracy'] for r in rows])} | "
                     f"{cell([r['degraded']['downscale:14'] for r in rows])} | "
                     f"{cell([r['degraded']['blur:4'] for r in rows])} | "
                     f"{statistics.fmean(r['final_loss'] for r in rows):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS per run (the loss table used 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "paper" / "finetune_init.json")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    runs = ROOT / "runs" / "paper" / "finetune_init"
    carried = ({r["seed"]: r for r in json.loads(args.out.read_text())["runs"] if r["init"] == "class_mean"}
               if args.out.is_file() else {})
    records = normal_runs(ROOT / "bench" / "results" / "paper" / "finetune_loss_table.json", args.seeds)
    records += [class_mean_run(seed, runs, carried) for seed in args.seeds]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": str(CONFIG.relative_to(ROOT)), "overrides": OVERRIDES,
                                    "threads": args.threads, "runs": records}, indent=1) + "\n")
    table = markdown(records)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
