"""The paper's loss comparison at small scale: every loss × every seed through `marginface train`, one run after
another, then held-out verification accuracy as mean ± spread per loss (JSON + a markdown table).

    python bench/paper/loss_table.py --table lfw                # configs/paper/lfw_*.yaml, seeds 0 1
    python bench/paper/loss_table.py --table synthetic --seeds 0 1 2 3 4
    python bench/paper/loss_table.py --table lfw --quick        # a minutes-long smoke of the same pipeline
    python bench/paper/loss_table.py --table finetune --degraded downscale:14 --degraded blur:4
                                  # configs/paper/finetune_*.yaml: the losses when fine-tuning the pretrained
                                  # MobileFaceNet; each run also evaluated on its held-out pairs degraded by SPEC

Runs whose result.json already exists are read, not retrained, so an interrupted table continues where it
stopped; a record of the earlier report whose run folder is gone (a fresh checkout) is carried over when its
config digest (config text + overrides, `config_sha256`) still matches, marked "carried", and records of losses
or seeds this invocation does not plan stay in the report; a run another runner has claimed (its claimed_by
file) is skipped, so two runners can share one runs folder, and `--summarise-only` writes the table from
whatever has finished. The main losses run for every seed first, then the extra ones, so a table cut short by
time still has the main comparison.
Each run's wall time (process start to exit, evaluation included) is recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAIN_LOSSES = ["softmax", "normface", "cosface", "arcface"]
ADAPTIVE_LOSSES = ["adaface", "magface", "curricularface", "elasticface"]  # the margins that came after
EXTRA_LOSSES = ["sphereface", "combined", *ADAPTIVE_LOSSES]
LABELS = {"softmax": "Softmax", "normface": "NormFace (s·cos θ)", "sphereface": "SphereFace (m1 = 1.35)",
          "cosface": "CosFace (m3 = 0.35)", "arcface": "ArcFace (m2 = 0.5)",
          "combined": "Combined (1, 0.3, 0.2)", "adaface": "AdaFace (m 0.4, h 0.333)",
          "magface": "MagFace (m 0.45–0.8)", "curricularface": "CurricularFace (m 0.5)",
          "elasticface": "ElasticFace-Arc (N(0.5, 0.05²))"}


def degraded_accuracy(run_dir: Path, spec: str, config: Path) -> float:
    """Held-out verification accuracy of a finished run's model with its eval pairs degraded by `spec`
    (`marginface eval --perturb`, flip test as in training; cached in RUN/eval_<spec>/report.json)."""
    out = run_dir / f"eval_{spec.replace(':', '_')}"
    report = out / "report.json"
    if not report.is_file():
        import yaml

        (pairs, images), *_ = yaml.safe_load(config.read_text())["eval"]["pairs"]
        subprocess.run([sys.executable, "-m", "marginface", "eval", str(run_dir / "model"), "--pairs", pairs, images,
                        "--perturb", spec, "--out", str(out)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    (verification,) = json.loads(report.read_text())["verification"]
    return verification["accuracy_mean"]


def run_one(table: str, loss: str, seed: int, runs: Path, overrides: list[str], train: bool = True,
            degraded: tuple[str, ...] = ()) -> dict | None:
    """Train one (loss, seed) through the CLI unless its result exists or another runner claimed it (then
    None: several runners may share one runs folder); returns its record."""
    out = runs / f"{loss}_seed{seed}"
    result_path = out / "result.json"
    wall_path = out / "wall_seconds.txt"
    claim = out / "claimed_by"
    if not result_path.is_file():
        if not train or claim.is_file():
            return None
        out.mkdir(parents=True, exist_ok=True)
        claim.write_text(f"{os.getpid()}\n")
        config = ROOT / "configs" / "paper" / f"{table}_{loss}.yaml"
        command = [sys.executable, "-m", "marginface", "train", str(config),
                   "--set", f"seed={seed}", "--set", f"output_dir={out}"]
        for item in overrides:
            command += ["--set", item]
        print(f"[{time.strftime('%H:%M:%S')}] {loss} seed {seed}: {' '.join(command[2:])}", flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall_path.write_text(f"{time.perf_counter() - started:.1f}\n")
    result = json.loads(result_path.read_text())
    accuracy = next(iter(result["verification"].values()), float("nan"))
    wall = float(wall_path.read_text()) if wall_path.is_file() else float("nan")
    config = ROOT / "configs" / "paper" / f"{table}_{loss}.yaml"
    return {"loss": loss, "seed": seed, "config_sha256": config_digest(table, loss, overrides),
            "accuracy": accuracy, "final_loss": result["final_loss"],
            "degraded": {spec: degraded_accuracy(out, spec, config) for spec in degraded},
            "steps": result["steps"], "train_seconds": result["seconds"], "wall_seconds": wall,
            "skipped_steps": result["skipped_steps"], "run_dir": str(out.relative_to(ROOT) if out.is_relative_to(ROOT)
                                                                     else out)}


def config_digest(table: str, loss: str, overrides: list[str]) -> str:
    """sha256 of a run's config text and command-line overrides: a carried record is reused only if it matches."""
    config = (ROOT / "configs" / "paper" / f"{table}_{loss}.yaml").read_text()
    return hashlib.sha256(json.dumps([config, overrides]).encode()).hexdigest()


def carried_records(out: Path, table: str, overrides: list[str], quick: bool) -> dict[tuple[str, int], dict]:
    """Records of an earlier report at `out` whose run folder is gone (another machine, a cleaned runs/) but
    whose config digest still matches: kept instead of retrained, so a table continues across checkouts."""
    if not out.is_file():
        return {}
    report = json.loads(out.read_text())
    if report.get("table") != table or report.get("quick") != quick:
        return {}
    return {(r["loss"], r["seed"]): r for r in report["runs"]
            if r.get("config_sha256") == config_digest(table, r["loss"], overrides)}


def summarise(records: list[dict]) -> list[dict]:
    """Per loss: mean, sample standard deviation (n − 1), min and max accuracy over seeds, total wall time."""
    rows = []
    for loss in [*MAIN_LOSSES, *EXTRA_LOSSES]:
        accs = [r["accuracy"] for r in records if r["loss"] == loss]
        if not accs:
            continue
        rows.append({"loss": loss, "seeds": len(accs), "mean": statistics.fmean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else float("nan"), "min": min(accs),
                     "max": max(accs), "accuracies": accs,
                     "final_loss_mean": statistics.fmean(r["final_loss"] for r in records if r["loss"] == loss),
                     "degraded": {spec: statistics.fmean(r["degraded"][spec] for r in records if r["loss"] == loss)
                                  for spec in records[0].get("degraded", {})},
                     "wall_seconds": sum(r["wall_seconds"] for r in records if r["loss"] == loss)})
    return rows


def markdown(rows: list[dict]) -> str:
    """The table as markdown: accuracy in %, mean ± sample std, min–max and each seed."""
    specs = list(rows[0].get("degraded", {})) if rows else []
    lines = ["| loss | seeds | accuracy % (mean ± std) | min – max | per seed | "
             + "".join(f"{spec} % (mean) | " for spec in specs) + "final train loss | wall (all seeds) |",
             "|---|---|---|---|---|" + "---|" * len(specs) + "---|---|"]
    for row in rows:
        per_seed = " ".join(f"{100 * a:.2f}" for a in row["accuracies"])
        lines.append(f"| {LABELS[row['loss']]} | {row['seeds']} | {100 * row['mean']:.2f} ± {100 * row['std']:.2f} | "
                     f"{100 * row['min']:.2f} – {100 * row['max']:.2f} | {per_seed} | "
                     + "".join(f"{100 * row['degraded'][spec]:.2f} | " for spec in specs)
                     + f"{row['final_loss_mean']:.2f} | {row['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=["lfw", "synthetic", "finetune"], default="lfw")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--losses", nargs="+", default=MAIN_LOSSES, choices=[*MAIN_LOSSES, *EXTRA_LOSSES])
    parser.add_argument("--extra-losses", nargs="*", default=EXTRA_LOSSES, choices=EXTRA_LOSSES,
                        help="run after the main losses for every seed (default: sphereface, combined, adaptive)")
    parser.add_argument("--data", help="lfw-split output folder (default runs/paper/lfw_f01)")
    parser.add_argument("--quick", action="store_true", help="20 steps per run: checks the pipeline, not the losses")
    parser.add_argument("--degraded", action="append", default=[], metavar="SPEC",
                        help="also evaluate each finished run on its held-out pairs perturbed by SPEC (repeatable)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="read the finished runs and write the table; train nothing")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS per run (default 1: on a shared CPU more threads spin on each other)")
    parser.add_argument("--runs", help="run directories (default runs/paper/<table>[_quick])")
    parser.add_argument("--out", help="JSON path (default bench/results/paper/<table>_loss_table[_quick].json)")
    args = parser.parse_args()
    suffix = "_quick" if args.quick else ""
    runs = Path(args.runs or ROOT / "runs" / "paper" / f"{args.table}{suffix}").resolve()
    out = Path(args.out or ROOT / "bench" / "results" / "paper" / f"{args.table}_loss_table{suffix}.json")
    overrides = []
    if args.data:
        data = Path(args.data).resolve()
        overrides += [f"data.path={data / 'rec'}", f"eval.pairs=[[{data / 'test_pairs.txt'}, {data / 'test'}]]"]
    if args.quick:
        overrides += ["optim.max_steps=20", "log_every=5"]
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    runs.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = [(loss, seed) for seed in args.seeds for loss in args.losses]
    plan += [(loss, seed) for seed in args.seeds for loss in args.extra_losses if loss not in args.losses]
    records: list[dict] = []
    carried = carried_records(out, args.table, overrides, args.quick)
    started = time.perf_counter()
    for loss, seed in plan:
        earlier = carried.get((loss, seed))
        if (earlier is not None and not (runs / f"{loss}_seed{seed}" / "result.json").is_file()
                and set(args.degraded) <= set(earlier.get("degraded", {}))):
            record = {**earlier, "degraded": {spec: earlier["degraded"][spec] for spec in args.degraded},
                      "carried": True}
        else:
            record = run_one(args.table, loss, seed, runs, overrides, train=not args.summarise_only,
                             degraded=tuple(args.degraded))
        if record is None:
            print(f"{loss} seed {seed}: not finished (claimed by another runner or --summarise-only)", flush=True)
            continue
        records.append(record)
        kept = [r for key, r in carried.items() if key not in plan]
        rows = summarise(records + kept)
        config = (ROOT / "configs" / "paper" / f"{args.table}_{MAIN_LOSSES[-1]}.yaml").read_text()
        report = {"table": args.table, "quick": args.quick, "overrides": overrides, "threads": args.threads,
                  "runs": records + kept,
                  "summary": rows, "elapsed_seconds": time.perf_counter() - started,
                  "config_arcface": config, "finished": len(records) == len(plan)}
        out.write_text(json.dumps(report, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(rows))
        print(f"[{time.strftime('%H:%M:%S')}] {loss} seed {seed}: accuracy {100 * records[-1]['accuracy']:.2f} %, "
              f"wall {records[-1]['wall_seconds']:.0f} s", flush=True)
    print(markdown(summarise(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
