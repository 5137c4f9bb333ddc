"""Out-of-distribution sweep: LFW verification accuracy vs perturbation level, and detection failures vs level.

Each LFW photo of the chosen folds is detected and aligned once; the aligned faces stay in memory, and every
level of every perturbation (marginface.data.perturb, seeded per image as `marginface eval --perturb` does)
is applied to them before embedding. The before-detection variant degrades the photo instead, so detection
runs per level and its failures (centre-crop fallbacks) are counted. The unperturbed model on the same pairs,
in the same run, is the reference every level is compared with (ratio = accuracy / clean accuracy).

    python bench/paper/ood_sweep.py --quick                    # a minutes-long smoke (fold 0, 5 levels)
    python bench/paper/ood_sweep.py                            # the pretrained MobileFaceNet, LFW folds 0,1
    python bench/paper/ood_sweep.py --model runs/paper/lfw/arcface_seed0 --name arcface_lfw  # a model trained here
    python bench/paper/ood_sweep.py --replot bench/results/paper/ood/ood_NAME.json           # figures only

A model trained here on LFW must be evaluated only on folds whose identities it never saw (configs/paper/lfw_*
hold out folds 0 and 1, the default here). Writes ood_<name>.json and PNGs into bench/results/paper/ood/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from marginface.data.pairs import PairSet, read_pairs_txt
from marginface.data.perturb import DEFINITIONS, Perturbation, image_seed, parse_perturbation
from marginface.eval.pipeline import embed_images, pair_scores, perturbed_face
from marginface.eval.verification import evaluate_verification
from marginface.infer.detect import YuNetDetector
from marginface.infer.embedder import Embedder, load_embedder
from marginface.infer.prepare import FacePreprocessor

DATA = Path(os.environ.get("MARGINFACE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
PRETRAINED = DATA / "face_recognition_mobilefacenet" / "mobilefacenet_dynamic_batch.onnx"
DETECTOR = DATA / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx"
OUT = Path(__file__).resolve().parents[1] / "results" / "paper" / "ood"

AFTER = {  # perturbations of the aligned face: kind -> levels, from mild to severe
    "blur": ["1", "2", "4", "6"],
    "downscale": ["56", "28", "14", "7"],
    "jpeg": ["20", "10", "5", "2"],
    "occlude": ["0.1", "0.2", "0.3", "0.5"],
    "gamma": ["0.25", "0.5", "2", "4"],
    "gray": [""],
}
BEFORE = {  # perturbations of the photo before detection (each level costs a detection pass)
    "downscale": ["28", "20", "14", "10"],
}
QUICK_AFTER = {"blur": ["4"], "downscale": ["14"], "occlude": ["0.3"], "gray": [""]}
QUICK_BEFORE = {"downscale": ["10"]}


def _spec(kind: str, level: str) -> Perturbation:
    return parse_perturbation(f"{kind}:{level}" if level else kind)


def _measure(scores: np.ndarray, pairs: PairSet) -> dict:
    result = evaluate_verification(scores, pairs.issame, pairs.folds)
    return {"accuracy": result.accuracy_mean, "fold_accuracies": [f.accuracy for f in result.folds],
            "auc": result.auc, "tar_at_far_0.01": result.tar_at_far.get("0.01")}


def sweep(embedder: Embedder, pairs: PairSet, detector: YuNetDetector, after: dict, before: dict, flip: bool,
          batch_size: int, log: logging.Logger) -> dict:
    """Align once, then measure the clean reference and every (kind, level) after and before detection."""
    seeds = [image_seed(p) for p in pairs.images]
    start = time.perf_counter()
    prep = FacePreprocessor(detector, embedder.input_size)
    faces = [prep(pairs.load_image(i)) for i in range(len(pairs.images))]
    align = {"seconds": time.perf_counter() - start, "aligned": prep.aligned, "fallbacks": prep.fallbacks}
    log.info("aligned %d images once in %.0f s (%d fallbacks)", len(faces), align["seconds"], prep.fallbacks)

    def run(load, label: str) -> dict:
        t0 = time.perf_counter()
        emb = embed_images(len(faces), load, embedder, batch_size, flip)
        row = _measure(pair_scores(emb, pairs.pairs), pairs)
        row["seconds"] = time.perf_counter() - t0
        log.info("%-28s accuracy %.4f  (%.0f s)", label, row["accuracy"], row["seconds"])
        return row

    clean = run(lambda i: faces[i], "clean")
    results: dict = {"align": align, "clean": clean, "after_alignment": {}, "before_detection": {}}
    for kind, levels in after.items():
        rows = []
        for level in levels:
            chain = (_spec(kind, level),)
            row = run(lambda i, c=chain: perturbed_face(faces[i], prep, c, False, seeds[i]), chain[0].spec)
            rows.append({"level": level or None, "spec": chain[0].spec, **row})
        results["after_alignment"][kind] = rows
    for kind, levels in before.items():
        rows = []
        for level in levels:
            chain = (_spec(kind, level),)
            level_prep = FacePreprocessor(detector, embedder.input_size)
            row = run(lambda i, c=chain, p=level_prep: perturbed_face(pairs.load_image(i), p, c, True, seeds[i]),
                      f"{chain[0].spec} before detection")
            row.update(detected=level_prep.aligned, detection_failures=level_prep.fallbacks,
                       failure_rate=level_prep.fallbacks / len(faces))
            rows.append({"level": level, "spec": chain[0].spec, **row})
        results["before_detection"][kind] = rows
    return results


def plot(results: dict, name: str, out: Path) -> list[Path]:
    """accuracy vs level per perturbation, and detection failures / accuracy vs level before detection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = results["clean"]["accuracy"]
    kinds = [k for k in results["after_alignment"] if k != "gray"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, kind in zip(axes.flat, kinds, strict=False):
        rows = results["after_alignment"][kind]
        x = [float(r["level"]) for r in rows]
        ax.plot(x, [100 * r["accuracy"] for r in rows], marker="o", label="after alignment")
        before = results["before_detection"].get(kind)
        if before:
            ax.plot([float(r["level"]) for r in before], [100 * r["accuracy"] for r in before], marker="s",
                    linestyle="--", label="before detection")
        ax.axhline(100 * clean, color="gray", linestyle=":", label=f"clean {100 * clean:.2f} %")
        ax.axhline(50, color="red", linewidth=0.6, linestyle=":")
        if kind == "downscale":
            ticks = sorted({*x, *(float(r["level"]) for r in before or [])})
            ax.invert_xaxis()
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(int(v)) for v in ticks])
        if kind == "jpeg":
            ax.invert_xaxis()
        if kind == "gamma":
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set_title(f"{kind}: {DEFINITIONS[kind].split(',')[0]}", fontsize=8)
        ax.set_xlabel({"blur": "sigma (px of the 112 face)", "downscale": "face size (px)", "jpeg": "quality",
                       "occlude": "occluded fraction", "gamma": "gamma"}[kind])
        ax.set_ylabel("LFW verification accuracy (%)")
        ax.set_ylim(45, 100.5)
        ax.legend(fontsize=7, loc="lower left")
    gray = results["after_alignment"].get("gray")
    ax = axes.flat[len(kinds)]
    labels = ["clean"] + (["gray"] if gray else [])
    values = [100 * clean] + ([100 * gray[0]["accuracy"]] if gray else [])
    ax.bar(labels, values, color=["tab:gray", "tab:blue"][:len(values)])
    for i, v in enumerate(values):
        ax.annotate(f"{v:.2f} %", (i, v - 4), ha="center", va="top", fontsize=8, color="white")
    ax.set_ylim(45, 100.5)
    ax.set_title("gray: BT.601 luminance in all channels", fontsize=8)
    fig.suptitle(f"{name}: LFW accuracy under perturbation ({results['setup']['pairs']} pairs, folds "
                 f"{results['setup']['folds']})", fontsize=10)
    fig.tight_layout()
    paths = [out / f"ood_accuracy_{name}.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    if results["before_detection"]:
        fig, axes = plt.subplots(1, len(results["before_detection"]), figsize=(5 * len(results["before_detection"]), 4),
                                 squeeze=False)
        for ax, (kind, rows) in zip(axes.flat, results["before_detection"].items(), strict=True):
            x = [float(r["level"]) for r in rows]
            ax.plot(x, [100 * r["failure_rate"] for r in rows], marker="s", color="tab:red", label="no face found")
            ax.set_ylabel("detection failures (% of photos)")
            ax.set_ylim(-2, 102)
            ax.set_xlabel({"downscale": "face size (px; photo scaled by PX/112, left small)",
                           "blur": "sigma (px of the photo)"}.get(kind, kind))
            if kind == "downscale":
                ax.invert_xaxis()
                ax.set_xscale("log", base=2)
                ax.set_xticks(x, [str(int(v)) for v in x])
            twin = ax.twinx()
            twin.plot(x, [100 * r["accuracy"] for r in rows], marker="o", color="tab:blue", label="accuracy")
            twin.set_ylabel("accuracy (%)")
            twin.set_ylim(45, 100.5)
            ax.set_title(f"{kind} before detection", fontsize=9)
            lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            ax.legend(lines, ["no face found", "accuracy"], fontsize=7, loc="center left")
        fig.suptitle(f"{name}: YuNet on degraded LFW photos", fontsize=10)
        fig.tight_layout()
        paths.append(out / f"ood_detection_{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=PRETRAINED, help="ONNX file, exported model or run directory")
    parser.add_argument("--name", help="label in file names (default: the model file or folder name)")
    parser.add_argument("--folds", default="0,1", help="LFW folds to use (default 0,1: 1,200 pairs)")
    parser.add_argument("--flip", action="store_true", help="flip-test embeddings (2x the time)")
    parser.add_argument("--quick", action="store_true", help="fold 0 only, one level of four perturbations")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the figures of a finished sweep")
    args = parser.parse_args()
    if args.replot:
        results = json.loads(args.replot.read_text())
        print("wrote", *plot(results, results["setup"]["name"], args.replot.parent))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("ood_sweep")

    name = args.name or (args.model.stem if args.model.suffix == ".onnx" else args.model.name)
    folds = [0] if args.quick else [int(f) for f in args.folds.split(",")]
    if args.quick:
        name += "_quick"
    pairs = read_pairs_txt(DATA / "lfw" / "pairs.txt", DATA / "lfw" / "lfw-deepfunneled").subset(folds)
    embedder = load_embedder(args.model)
    start = time.perf_counter()
    results = sweep(embedder, pairs, YuNetDetector(DETECTOR), QUICK_AFTER if args.quick else AFTER,
                    QUICK_BEFORE if args.quick else BEFORE, args.flip, args.batch_size, log)
    wall = time.perf_counter() - start
    results["setup"] = {"model": str(args.model), "name": name, "folds": folds, "pairs": len(pairs),
                        "images": len(pairs.images), "flip": args.flip, "detector": DETECTOR.name,
                        "wall_seconds": wall, "cpu_threads_visible": os.cpu_count(),
                        "definitions": DEFINITIONS,
                        "seed": "CRC-32 of each image's file name (as marginface eval --perturb)"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"ood_{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    figures = plot(results, name, args.out)

    clean = results["clean"]["accuracy"]
    print(f"{name}: LFW folds {folds} ({len(pairs)} pairs, {len(pairs.images)} images), wall {wall / 60:.1f} min")
    print(f"{'perturbation':<34}{'accuracy':>10}{'vs clean':>10}{'no face':>9}")
    print(f"{'clean (reference, same run)':<34}{100 * clean:>9.2f}%{1.0:>10.3f}")
    for where, table in (("", results["after_alignment"]), (" before detection", results["before_detection"])):
        for rows in table.values():
            for r in rows:
                failures = f"{100 * r['failure_rate']:.1f}%" if "failure_rate" in r else ""
                print(f"{r['spec'] + where:<34}{100 * r['accuracy']:>9.2f}%{r['accuracy'] / clean:>10.3f}"
                      f"{failures:>9}")
    print("wrote", args.out / f"ood_{name}.json", *figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
