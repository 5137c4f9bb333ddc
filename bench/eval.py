"""Benchmark: verification metric computation, and the embedding pass in ONNX vs PyTorch.

1. 10-fold accuracy + ROC for 6,000 pairs (LFW's size) by marginface (exact sort-based search) beside
   arcface_torch's routine re-implemented plainly: 400 squared-distance thresholds, each evaluated on the
   nine training folds, then ROC TPR/FPR at the same 400 thresholds (as its verification.py does).
2. images/s of the embedding pass for one of our backbones (random weights, BN statistics from a few
   batches) through PyTorch and through its ONNX export on onnxruntime, same batches, same process.

    python bench/eval.py      # writes bench/results/eval.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from marginface.backbones import get_backbone
from marginface.eval.verification import evaluate_verification
from marginface.infer.embedder import OnnxEmbedder, TorchEmbedder
from marginface.infer.export import export_onnx


def arcface_torch_style(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray) -> tuple[float, np.ndarray]:
    """The baseline: per-fold grid search over 400 thresholds, then a 400-point ROC, with plain loops."""
    distance = 2.0 - 2.0 * scores
    thresholds = np.arange(0, 4, 0.01)
    accuracies = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        train_acc = [np.mean((distance[train] < t) == issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accuracies.append(np.mean((distance[test] < best) == issame[test]))
    tpr = np.array([np.sum((distance < t) & issame) / issame.sum() for t in thresholds])
    return float(np.mean(accuracies)), tpr


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default="mbf")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    issame = np.repeat([True, False], 300)[None, :].repeat(10, 0).reshape(-1)
    scores = np.where(issame, rng.normal(0.6, 0.15, 6000), rng.normal(0.05, 0.12, 6000)).clip(-1, 1)
    folds = np.repeat(np.arange(10), 600)
    ours = _median_time(lambda: evaluate_verification(scores, issame, folds), args.repeats)
    base = _median_time(lambda: arcface_torch_style(scores, issame, folds), args.repeats)
    ours_acc = evaluate_verification(scores, issame, folds).accuracy_mean
    base_acc = arcface_torch_style(scores, issame, folds)[0]
    print(f"metrics, 6000 pairs: ours {1000 * ours:7.1f} ms (exact search, accuracy {ours_acc:.4f}); "
          f"arcface_torch-style grid {1000 * base:7.1f} ms (accuracy {base_acc:.4f}); speed-up {base / ours:5.1f}x")

    torch.set_num_threads(2)
    model = get_backbone(args.backbone)
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 112, 112) * 2 - 1)  # BN statistics that are not the identity
    faces = rng.integers(0, 256, (args.images, 112, 112, 3), dtype=np.uint8)
    torch_embedder = TorchEmbedder(model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx")
        onnx_embedder = OnnxEmbedder(onnx_path, threads=2)

        def run(embedder) -> None:
            for start in range(0, len(faces), 64):
                embedder.embed(faces[start:start + 64])

        run(torch_embedder)
        run(onnx_embedder)
        t_torch = _median_time(lambda: run(torch_embedder), 3)
        t_onnx = _median_time(lambda: run(onnx_embedder), 3)
    print(f"embedding pass ({args.backbone}, batch 64): PyTorch {args.images / t_torch:7.1f} img/s, "
          f"ONNX Runtime {args.images / t_onnx:7.1f} img/s ({t_torch / t_onnx:4.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "metrics_6000_pairs_ms": {"marginface_exact": 1000 * ours, "arcface_torch_grid": 1000 * base,
                                  "speedup": base / ours},
        "accuracy": {"marginface_exact": ours_acc, "arcface_torch_grid": base_acc},
        "embedding_img_per_s": {"backbone": args.backbone, "pytorch": args.images / t_torch,
                                "onnxruntime": args.images / t_onnx, "onnx_over_pytorch": t_torch / t_onnx},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
