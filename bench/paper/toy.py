"""The paper's toy example on real faces: 2-D features of the 8 LFW identities with the most photos, trained from
scratch with Softmax, SphereFace, CosFace and ArcFace (configs/paper/toy_*.yaml through `marginface train`).

    python bench/paper/toy.py      # -> bench/results/paper/toy_2d.png and toy_2d.json

By default every loss's class centres start as unit vectors 45° apart (`--centres spread`, the configs'
`head.init: spread`): from the library's N(0, 0.01²) start (`--centres random`, i.e. `head.init=normal`) the
normalised heads collapse their centres together in 2-D within the first steps (docs/paper.md §2;
bench/paper/toy_diagnosis.py).

Each panel shows the training faces' normalised features on the unit circle, coloured by identity, and the class
centres (the head's weight rows) as lines; under it, the angular spread of each class (mean angle between a
face's feature and its own class centre) and the gaps between neighbouring centres.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from marginface.backbones import load
from marginface.data.folder import ImageFolderDataset, scan_identity_folder
from marginface.data.lfw_split import link_photos
from marginface.data.transforms import to_model_input
from marginface.train.checkpoint import latest_valid, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
LOSSES = ["softmax", "sphereface", "cosface", "arcface"]
TITLES = {"softmax": "Softmax", "sphereface": "SphereFace ψ(1.35θ)", "cosface": "CosFace m3 = 0.35",
          "arcface": "ArcFace m2 = 0.5"}


def prepare_faces(raw: Path, work: Path, detector: Path, identities: int = 8) -> Path:
    """Align the photos of the `identities` people with the most photos into work/aligned (once)."""
    from marginface.infer.detect import YuNetDetector
    from marginface.infer.prepare import align_folder

    aligned = work / "aligned"
    if (aligned / "no_face.txt").is_file():
        return aligned
    names, items = scan_identity_folder(raw)
    counts = np.bincount([label for _, label in items], minlength=len(names))
    top = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[:identities]
    files = [path for path, label in items if label in set(top)]
    link_photos(files, raw, work / "raw")
    report = align_folder(work / "raw", aligned, YuNetDetector(detector))
    print(f"aligned {report.aligned} of {report.total} photos of {[names[i] for i in top]}", flush=True)
    return aligned


def train(loss: str, runs: Path, data: Path, centres: str = "spread", extra: list[str] | None = None) -> float:
    """Train one loss through the CLI unless its model exists; returns the wall seconds (nan when reused).

    centres = 'spread' (the configs' head.init) or 'random' (head.init=normal, the library's N(0, 0.01²))."""
    out = runs / loss
    if (out / "model" / "model.json").is_file():
        return float("nan")
    init = "spread" if centres == "spread" else "normal"
    overrides = [f"output_dir={out}", f"data.path={data}", f"head.init={init}", *(extra or [])]
    command = [sys.executable, "-m", "marginface", "train", str(ROOT / "configs" / "paper" / f"toy_{loss}.yaml")]
    command += [arg for value in overrides for arg in ("--set", value)]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def features_and_centres(run: Path, data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 2) features of every training face, (N,) labels, (C, 2) class centres from the last checkpoint."""
    model = load(run / "model")
    dataset = ImageFolderDataset(data)
    images, labels = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        if sample is not None:
            images.append(sample.image)
            labels.append(sample.label)
    batch = torch.from_numpy(np.stack(images))
    with torch.no_grad():
        feats = torch.cat([model(to_model_input(batch[s:s + 128])) for s in range(0, len(batch), 128)])
    weights, _, _ = load_checkpoint(latest_valid(run).path)
    return feats.numpy(), np.asarray(labels), weights["head.weight"].numpy()


def angular_stats(feats: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> dict:
    """Per-class mean angle to its own centre, neighbouring centre gaps (degrees), nearest-centre accuracy."""
    phi = np.arctan2(feats[:, 1], feats[:, 0])
    centre_phi = np.arctan2(centres[:, 1], centres[:, 0])
    diff = np.degrees(np.abs(np.angle(np.exp(1j * (phi - centre_phi[labels])))))
    spread = [float(diff[labels == c].mean()) for c in range(len(centres))]
    order = np.sort(np.degrees(centre_phi) % 360)
    gaps = np.diff(np.concatenate([order, order[:1] + 360]))
    cos = (feats / np.linalg.norm(feats, axis=1, keepdims=True)) @ (
        centres / np.linalg.norm(centres, axis=1, keepdims=True)).T
    return {"spread_deg": spread, "mean_spread_deg": float(np.mean(spread)), "centre_gaps_deg": gaps.tolist(),
            "min_gap_deg": float(gaps.min()), "nearest_centre_accuracy": float((cos.argmax(1) == labels).mean())}


def plot(panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, dict]], names: list[str], path: Path) -> None:
    """One unit-circle panel per loss with the statistics printed under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 6.2))
    colours = plt.get_cmap("tab10")
    for ax, (loss, (feats, labels, centres, stats)) in zip(np.atleast_1d(axes), panels.items(), strict=True):
        unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        radius = 1.0 + 0.04 * np.random.default_rng(0).standard_normal(len(unit))  # spread dots off the line
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="grey", lw=0.5))
        for c in range(len(centres)):
            pts = unit[labels == c] * radius[labels == c, None]
            ax.scatter(pts[:, 0], pts[:, 1], s=4, color=colours(c), label=names[c] if loss == LOSSES[0] else None)
            w = centres[c] / np.linalg.norm(centres[c])
            ax.plot([0, 1.25 * w[0]], [0, 1.25 * w[1]], color=colours(c), lw=1.5)
        ax.set(xlim=(-1.35, 1.35), ylim=(-1.35, 1.35), aspect="equal", xticks=[], yticks=[])
        ax.set_title(TITLES[loss])
        spread = " ".join(f"{v:.0f}" for v in stats["spread_deg"])
        gaps = " ".join(f"{v:.0f}" for v in sorted(stats["centre_gaps_deg"]))
        ax.set_xlabel(f"spread per class (°): {spread}\nmean {stats['mean_spread_deg']:.1f}°\n"
                      f"centre gaps (°, sorted): {gaps}\nmin gap {stats['min_gap_deg']:.1f}°, "
                      f"nearest-centre acc {100 * stats['nearest_centre_accuracy']:.1f} %", fontsize=8)
    fig.legend(loc="upper center", ncol=4, fontsize=8, markerscale=3)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_root = Path(os.environ.get("MARGINFACE_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--raw", default=str(data_root / "lfw" / "lfw-deepfunneled"))
    parser.add_argument("--detector", default=str(data_root / "face_detection_yunet" /
                                                  "face_detection_yunet_2023mar.onnx"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "paper" / "toy8"))
    parser.add_argument("--runs", help="run directories (default runs/paper/toy_<centres>)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "paper"))
    parser.add_argument("--name", default="toy_2d", help="output files: <out>/<name>.png and .json")
    parser.add_argument("--centres", choices=["spread", "random"], default="spread",
                        help="initial class centres for every loss alike: 'spread' (unit vectors 45° apart, "
                             "docs/paper.md §2) or 'random' (the library's N(0, 0.01²); the margin heads collapse)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every loss alike, e.g. --set optim.grad_clip=null "
                             "(give a fresh --runs: models already there are reused)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for each training run")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = prepare_faces(Path(args.raw), Path(args.work), Path(args.detector)).resolve()
    names = ImageFolderDataset(data).class_names
    runs = Path(args.runs or ROOT / "runs" / "paper" / f"toy_{args.centres}").resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    panels, report = {}, {"identities": names, "images": len(ImageFolderDataset(data)), "centres": args.centres,
                          "overrides": args.set, "losses": {}}
    for loss in LOSSES:
        wall = train(loss, runs, data, args.centres, args.set)
        feats, labels, centres = features_and_centres(runs / loss, data)
        stats = angular_stats(feats, labels, centres)
        panels[loss] = (feats, labels, centres, stats)
        report["losses"][loss] = {**stats, "train_wall_seconds": wall}
        print(f"{loss}: mean spread {stats['mean_spread_deg']:.1f}°, min centre gap {stats['min_gap_deg']:.1f}°, "
              f"nearest-centre accuracy {100 * stats['nearest_centre_accuracy']:.1f} % (train {wall:.0f} s)",
              flush=True)
    plot(panels, names, out / f"{args.name}.png")
    report["elapsed_seconds"] = time.perf_counter() - started
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / args.name}.png and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
