"""Fine-tuned vs starting model, same run: LFW folds 0–1 under the degradations of docs/paper_ood.md (and two
the fine-tuning never applied: motion blur and nearest-neighbour pixelation), 14 px before detection, and
ORL verification + open-set DIR at FPIR 0.01.

    python bench/finetune.py --model runs/finetune/lfw_robust/model/model.onnx --name lfw_robust
    python bench/finetune.py --model ... --name ... --reuse     # keep finished per-model sweeps (resumable)

Both models are evaluated by the same code (bench/paper/ood_sweep.py's sweep: align once, perturb the
aligned face seeded per image, no flip, 2-fold threshold choice) in one run; the starting model defaults to
the shared MobileFaceNet the fine-tuning began from. ORL goes through `marginface eval` (flip test, 10
folds, sampled pairs), as in docs/paper_ood.md. Writes bench/results/finetune/finetune_<name>.json, the
per-model sweeps and ORL reports beside it, and finetune_<name>.png (accuracy vs level, both models).
The fine-tuned model must not have trained on LFW folds 0–1 (configs/finetune_lfw_robust.yaml holds them out).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("ood_sweep", HERE / "paper" / "ood_sweep.py")
ood_sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ood_sweep)

OUT = HERE / "results" / "finetune"
AFTER = {  # after alignment: kind -> levels ("unseen" kinds were never applied in training)
    "downscale": ["28", "14"], "blur": ["2", "4"], "jpeg": ["10"], "occlude": ["0.1", "0.2"], "gray": [""],
    "motion": ["7", "13"], "pixelate": ["28", "14"],
}
UNSEEN = ("motion", "pixelate")
BEFORE = {"downscale": ["20", "14"]}
GOALS = {"clean": 0.990, "downscale:14": 0.90, "blur:4": 0.90, "occlude:0.2": 0.90}


def augment_cost(config_path: Path, batches: int = 20) -> dict:
    """Seconds per 64-face batch of the config's data.augment (in the training process, after decoding),
    on real aligned training faces, beside the measured training step time of the run (metrics.csv)."""
    import numpy as np

    from marginface.data.recordio import RecordIODataset
    from marginface.seeding import augment_stream
    from marginface.train.config import augment_from_config, load_config

    config = load_config(config_path)
    augment = augment_from_config(config)
    dataset = RecordIODataset(Path(config.data.path))
    faces = np.stack([dataset[i].image for i in range(64)])
    started = time.perf_counter()
    for batch in range(batches):
        augment.apply_batch(faces.copy(), augment_stream(config.seed, 0, batch, 0))
    per_batch = (time.perf_counter() - started) / batches
    return {"config": str(config_path), "batch": 64, "seconds_per_batch": per_batch, "batches_timed": batches}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def sweep_model(model: Path, name: str, reuse: bool, log: logging.Logger) -> dict:
    """The LFW sweep of one model (cached in OUT/sweep_<name>.json when --reuse and the file's hash matches)."""
    cache = OUT / f"sweep_{name}.json"
    digest = _sha(model)
    if reuse and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("sha256_16") == digest:
            log.info("reusing %s", cache)
            return cached
    pairs = ood_sweep.read_pairs_txt(ood_sweep.DATA / "lfw" / "pairs.txt",
                                     ood_sweep.DATA / "lfw" / "lfw-deepfunneled").subset([0, 1])
    start = time.perf_counter()
    results = ood_sweep.sweep(ood_sweep.load_embedder(model), pairs, ood_sweep.YuNetDetector(ood_sweep.DETECTOR),
                              AFTER, BEFORE, False, 64, log)
    results.update(model=str(model), sha256_16=digest, seconds=time.perf_counter() - start, pairs=len(pairs))
    cache.write_text(json.dumps(results, indent=2) + "\n")
    return results


def orl_model(model: Path, name: str, reuse: bool) -> dict:
    """ORL verification (sampled pairs) and open-set identification through `marginface eval`."""
    out = OUT / f"orl_{name}"
    report = out / "report.json"
    if not (reuse and report.is_file()):
        orl = ood_sweep.DATA / "orl_att_faces" / "att_faces"
        subprocess.run([sys.executable, "-m", "marginface", "eval", str(model), "--pairs-from", str(orl),
                        "--identification", str(orl), "--detector", str(ood_sweep.DETECTOR), "--out", str(out)],
                       check=True)
    data = json.loads(report.read_text())
    return data


def _orl_numbers(report: dict) -> dict:
    """Verification mean ± std and DIR at FPIR 0.01 / 0.1 from a `marginface eval` report of ORL."""
    (verification,) = report["verification"]
    (identification,) = report["identification"].values()
    return {"verification": verification["accuracy_mean"], "verification_std": verification["accuracy_std"],
            "pairs": verification["num_pairs"], "rank1": identification["rank1"],
            "dir_at_fpir_0.01": identification["dir_at_fpir"]["0.01"],
            "dir_at_fpir_0.1": identification["dir_at_fpir"]["0.1"]}


def _rows(sweep: dict) -> dict[str, float]:
    rows = {"clean": sweep["clean"]["accuracy"]}
    for table, suffix in ((sweep["after_alignment"], ""), (sweep["before_detection"], " before detection")):
        for entries in table.values():
            for row in entries:
                rows[row["spec"] + suffix] = row["accuracy"]
    return rows


def plot(start: dict, tuned: dict, names: tuple[str, str], path: Path) -> None:
    """Accuracy vs level per kind, both models on one axis each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [*AFTER, "downscale before detection"]
    fig, axes = plt.subplots(2, 4, figsize=(15, 7))
    for ax, kind in zip(axes.flat, kinds, strict=False):
        for sweep, label, style in ((start, names[0], "o--"), (tuned, names[1], "s-")):
            if kind.endswith("before detection"):
                rows = sweep["before_detection"]["downscale"]
            else:
                rows = sweep["after_alignment"][kind]
            levels = [0.0] + [float(r["level"] or 1) for r in rows]
            values = [100 * sweep["clean"]["accuracy"]] + [100 * r["accuracy"] for r in rows]
            ax.plot(range(len(levels)), values, style, label=label)
        ticks = ["clean"] + [r["level"] or kind for r in rows]
        ax.set_xticks(range(len(ticks)), ticks)
        unseen = " (never trained on)" if kind in UNSEEN else ""
        ax.set_title(f"{kind}{unseen}", fontsize=9)
        ax.set_ylim(45, 100.5)
        ax.axhline(90, color="gray", linewidth=0.6, linestyle=":")
        ax.set_ylabel("LFW folds 0–1 accuracy (%)", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Fine-tuned vs starting model: LFW verification under degradation (1,200 held-out pairs, no flip)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the fine-tuned model (.onnx or model folder)")
    parser.add_argument("--start", type=Path, default=ood_sweep.PRETRAINED, help="the model it started from")
    parser.add_argument("--name", required=True, help="label of the fine-tuned model in file names")
    parser.add_argument("--reuse", action="store_true", help="keep finished sweeps / ORL reports")
    parser.add_argument("--config", type=Path, default=HERE.parent / "configs" / "finetune_lfw_robust.yaml",
                        help="the training config whose augmentation cost is timed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("finetune")
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cost = augment_cost(args.config)
    log.info("augmentation: %.1f ms per batch of 64", 1000 * cost["seconds_per_batch"])
    names = ("start", args.name)
    sweeps = {name: sweep_model(path, name, args.reuse, log) for name, path in zip(names, (args.start, args.model),
                                                                                  strict=True)}
    orl = {name: _orl_numbers(orl_model(path, name, args.reuse)) for name, path in zip(names, (args.start, args.model),
                                                                                       strict=True)}
    rows = {name: _rows(sweep) for name, sweep in sweeps.items()}
    table = [{"condition": key, "start": rows["start"][key], args.name: rows[args.name][key],
              "delta_points": 100 * (rows[args.name][key] - rows["start"][key]),
              "unseen_in_training": key.split(":")[0] in UNSEEN} for key in rows["start"]]
    goals = {key: {"goal": goal, "reached": rows[args.name][key], "met": rows[args.name][key] >= goal}
             for key, goal in GOALS.items()}
    goals["clean within 0.2 points of the start"] = {
        "met": rows[args.name]["clean"] >= rows["start"]["clean"] - 0.002}
    goals["ORL verification no lower than the start"] = {
        "met": orl[args.name]["verification"] >= orl["start"]["verification"]}
    result = {"start": str(args.start), "model": str(args.model), "lfw_folds": [0, 1],
              "pairs": sweeps["start"]["pairs"], "flip": False, "table": table, "orl": orl, "goals": goals,
              "wall_seconds": time.perf_counter() - started}
    (OUT / f"finetune_{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(sweeps["start"], sweeps[args.name], names, OUT / f"finetune_{args.name}.png")
    print(f"{'condition':<32}{'start':>9}{args.name:>16}{'Δ points':>10}")
    for row in table:
        mark = "  (unseen)" if row["unseen_in_training"] else ""
        print(f"{row['condition']:<32}{100 * row['start']:>8.2f}%{100 * row[args.name]:>15.2f}%"
              f"{row['delta_points']:>+10.2f}{mark}")
    for name in names:
        numbers = orl[name]
        print(f"ORL {name}: verification {100 * numbers['verification']:.2f} %, DIR@FPIR0.01 "
              f"{100 * (numbers['dir_at_fpir_0.01'] or 0):.2f} %")
    for key, goal in goals.items():
        print(f"goal {key}: {'met' if goal['met'] else 'NOT met'}")
    print(f"augmentation: {1000 * cost['seconds_per_batch']:.1f} ms per batch of 64 in the training process")
    print("wrote", OUT / f"finetune_{args.name}.json", OUT / f"finetune_{args.name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
