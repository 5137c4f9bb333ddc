"""Does the feature norm measure face quality? MagFace's claim, checked on LFW folds 0–1 (issue 17).

For each model: every image of the held-out folds is detected and aligned once, then embedded clean and at each
level of the `eval --perturb` degradations (seeded per image, as the eval does), without the flip test, so the
norm is the model's own. Reported per model:

- the mean raw embedding norm and the verification accuracy at every level (a quality score should fall as
  the degradation grows), with Spearman's rank correlation between severity and norm per kind;
- an error-versus-reject curve (the form of NIST's face-quality evaluations) on the mixed-quality set made of
  every level's pairs together: a pair's quality is the smaller of its two norms, the threshold is fixed on
  the whole set before anything is rejected (the best-accuracy threshold), and the lowest-quality fraction of
  pairs is dropped. The same curve with random rejection is the reference a useless quality score matches.

    python bench/paper/norm_quality.py --model magface=runs/paper/finetune/magface_seed0/model \\
        --model arcface=runs/paper/finetune/arcface_seed0/model --model start=PRETRAINED
    python bench/paper/norm_quality.py --quick ...                  # fold 0, three levels: a smoke

Writes bench/results/paper/norm_quality.json (and a PNG beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from ood_sweep import DATA, DETECTOR, PRETRAINED, _spec

from marginface.data.pairs import read_pairs_txt
from marginface.data.perturb import image_seed
from marginface.eval.pipeline import embed_images, pair_scores, perturbed_face
from marginface.eval.verification import best_threshold_exact
from marginface.infer.detect import YuNetDetector
from marginface.infer.embedder import load_embedder
from marginface.infer.prepare import FacePreprocessor

OUT = Path(__file__).resolve().parents[1] / "results" / "paper" / "norm_quality.json"
LEVELS = {"downscale": ["56", "28", "14", "7"], "blur": ["2", "4", "6"], "occlude": ["0.2", "0.4"],
          "jpeg": ["10", "5"], "gray": [""]}
QUICK_LEVELS = {"downscale": ["14"], "blur": ["4"], "occlude": ["0.4"]}
REJECT = [round(0.05 * k, 2) for k in range(11)]  # fractions of pairs rejected, 0 … 0.5


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected among levels; ties get their order of appearance)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 1 else float("nan")


def error_vs_reject(scores: np.ndarray, issame: np.ndarray, quality: np.ndarray, fractions: list[float],
                    rng: np.random.Generator) -> dict:
    """Accuracy and FNMR of the kept pairs at one fixed threshold, rejecting the lowest-quality fraction first
    (and, for reference, a random fraction: the mean of 20 draws)."""
    threshold, accuracy_all = best_threshold_exact(scores, issame)
    correct = (scores > threshold) == issame

    def kept_metrics(keep: np.ndarray) -> tuple[float, float]:
        genuine = keep & issame
        fnmr = float((scores[genuine] <= threshold).mean()) if genuine.any() else float("nan")
        return float(correct[keep].mean()), fnmr

    order = np.argsort(quality, kind="stable")  # lowest quality first
    rows = []
    for fraction in fractions:
        keep = np.ones(len(scores), bool)
        keep[order[: int(round(fraction * len(scores)))]] = False
        accuracy, fnmr = kept_metrics(keep)
        random_acc = []
        for _ in range(20):
            drop = rng.permutation(len(scores))[: int(round(fraction * len(scores)))]
            mask = np.ones(len(scores), bool)
            mask[drop] = False
            random_acc.append(kept_metrics(mask)[0])
        rows.append({"reject": fraction, "accuracy": accuracy, "fnmr": fnmr,
                     "accuracy_random_reject": float(np.mean(random_acc))})
    return {"threshold": float(threshold), "accuracy_all": float(accuracy_all), "curve": rows}


def measure(name: str, model: Path, faces: list[np.ndarray], prep: FacePreprocessor, seeds: list[int], pairs,
            levels: dict, batch_size: int, log: logging.Logger) -> dict:
    """Norms and accuracy per level, and the error-vs-reject curve on all levels' pairs together."""
    embedder = load_embedder(model)
    conditions = [("clean", "", None)] + [(kind, level, _spec(kind, level)) for kind, ls in levels.items()
                                          for level in ls]
    per_level, all_scores, all_same, all_quality = [], [], [], []
    for kind, level, spec in conditions:
        t0 = time.perf_counter()
        chain = () if spec is None else (spec,)
        emb = embed_images(len(faces), lambda i, c=chain: perturbed_face(faces[i], prep, c, False, seeds[i]),
                           embedder, batch_size, flip=False)
        norms = np.linalg.norm(emb, axis=1)
        scores = pair_scores(emb, pairs.pairs)
        quality = np.minimum(norms[pairs.pairs[:, 0]], norms[pairs.pairs[:, 1]])
        threshold, accuracy = best_threshold_exact(scores, pairs.issame)
        per_level.append({"kind": kind, "level": level or None, "spec": spec.spec if spec else "clean",
                          "norm_mean": float(norms.mean()), "norm_std": float(norms.std()),
                          "accuracy_best_threshold": float(accuracy)})
        all_scores.append(scores)
        all_same.append(pairs.issame)
        all_quality.append(quality)
        log.info("%-10s %-14s norm %7.3f ± %6.3f  accuracy %.4f  (%.0f s)", name, per_level[-1]["spec"],
                 norms.mean(), norms.std(), accuracy, time.perf_counter() - t0)
    clean_norm = per_level[0]["norm_mean"]
    trends = {}
    for kind, ls in levels.items():
        rows = [r for r in per_level if r["kind"] == kind]
        if len(ls) < 2:
            continue
        severity = np.arange(len(rows) + 1)  # clean, then mild → severe (the order LEVELS lists them in)
        trends[kind] = spearman(severity, np.array([clean_norm] + [r["norm_mean"] for r in rows]))
    erc = error_vs_reject(np.concatenate(all_scores), np.concatenate(all_same), np.concatenate(all_quality),
                          REJECT, np.random.default_rng(0))
    return {"model": str(model), "levels": per_level, "severity_norm_spearman": trends, "mixed_set": {
        "pairs": int(sum(len(s) for s in all_scores)), "conditions": len(conditions), **erc}}


def plot(results: dict, out: Path) -> Path:
    """Norm vs level per kind, and error-vs-reject curves (quality order and random) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_norm, ax_erc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, res in results["models"].items():
        clean = res["levels"][0]["norm_mean"]
        ax_norm.plot(range(len(res["levels"])), [r["norm_mean"] / clean for r in res["levels"]], "o-", label=name)
        curve = res["mixed_set"]["curve"]
        x = [100 * r["reject"] for r in curve]
        line, = ax_erc.plot(x, [100 * (1 - r["accuracy"]) for r in curve], "o-", label=f"{name}: lowest norm first")
        ax_erc.plot(x, [100 * (1 - r["accuracy_random_reject"]) for r in curve], "--", color=line.get_color(),
                    label=f"{name}: random")
    first = next(iter(results["models"].values()))
    ax_norm.set_xticks(range(len(first["levels"])), [r["spec"] for r in first["levels"]], rotation=60, fontsize=8)
    ax_norm.set_ylabel("mean raw norm / clean mean norm")
    ax_norm.set_title("feature norm per degradation (LFW folds 0–1)")
    ax_norm.legend()
    ax_erc.set_xlabel("pairs rejected (%)")
    ax_erc.set_ylabel("verification error of kept pairs (%)")
    ax_erc.set_title("error vs reject, all levels' pairs together")
    ax_erc.legend(fontsize=7)
    fig.tight_layout()
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a model to measure (ONNX, exported model or run's model folder); PATH may be "
                             "PRETRAINED for the shared MobileFaceNet; repeatable")
    parser.add_argument("--folds", default="0,1")
    parser.add_argument("--quick", action="store_true", help="fold 0 and three levels: checks the pipeline")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("norm_quality")
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name:
            parser.error(f"--model {item!r}: expected NAME=PATH")
        models[name] = PRETRAINED if path == "PRETRAINED" else Path(path)
        if not models[name].exists():
            parser.error(f"--model {item!r}: {models[name]} does not exist")
    folds = [0] if args.quick else [int(f) for f in args.folds.split(",")]
    levels = QUICK_LEVELS if args.quick else LEVELS
    pairs = read_pairs_txt(DATA / "lfw" / "pairs.txt", DATA / "lfw" / "lfw-deepfunneled").subset(folds)
    start = time.perf_counter()
    prep = FacePreprocessor(YuNetDetector(DETECTOR), 112)
    faces = [prep(pairs.load_image(i)) for i in range(len(pairs.images))]
    seeds = [image_seed(p) for p in pairs.images]
    log.info("aligned %d images in %.0f s (%d fallbacks)", len(faces), time.perf_counter() - start, prep.fallbacks)
    results = {"setup": {"folds": folds, "pairs": len(pairs), "images": len(faces), "flip": False,
                         "levels": levels, "reject_fractions": REJECT, "quick": args.quick,
                         "cpu_threads": os.environ.get("OMP_NUM_THREADS")},
               "models": {name: measure(name, path, faces, prep, seeds, pairs, levels, args.batch_size, log)
                          for name, path in models.items()}}
    results["setup"]["wall_seconds"] = time.perf_counter() - start
    out = args.out.with_name(args.out.stem + "_quick.json") if args.quick else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    figure = plot(results, out)
    for name, res in results["models"].items():
        mixed = res["mixed_set"]
        curve = {r["reject"]: r for r in mixed["curve"]}
        print(f"{name}: norm trend (Spearman, severity vs norm) "
              + ", ".join(f"{k} {v:+.2f}" for k, v in res["severity_norm_spearman"].items()))
        print(f"  mixed set {mixed['pairs']} pairs: accuracy {100 * curve[0.0]['accuracy']:.2f} % → "
              f"{100 * curve[0.1]['accuracy']:.2f} % rejecting the lowest-norm 10 % "
              f"(random 10 %: {100 * curve[0.1]['accuracy_random_reject']:.2f} %)")
    print("wrote", out, figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
