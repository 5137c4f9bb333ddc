"""Why do the margin heads collapse in the 2-D toy example (docs/paper.md §2)? Cheap controlled experiments.

A small MLP (two 64-unit BN + PReLU layers) maps the toy's own 1,348 aligned LFW faces, as 16×16 grey pixels
(`--data faces`, the default; python bench/paper/toy.py aligns them first), or 8 noisy Gaussian clusters in
16-D (`--data gauss`), to 2-D features through the same tail as the toy's MobileFaceNet (bias-free linear →
BatchNorm1d with affine), trained with the library's MarginHead (or the bias-free softmax) the way
`marginface train` trains the toy: SGD momentum 0.9, weight decay 5e-4 on every parameter (class centres
included), linear warm-up for 10 steps then poly-2 decay, gradient clipping to norm 5 over backbone + head
together, head initialised N(0, 0.01²), batch 64 drawn at random, 210 steps, the toy's class sizes
530/236/144/121/109/77/71/60. Each variant changes ONE of these for all losses alike (NormFace, s·cos θ
without margin, is added as a control).

    PYTHONPATH=src python bench/paper/toy_diagnosis.py   # -> bench/results/paper/toy_diagnosis.json (~10 min)

Reported per loss and variant (median over seeds): smallest gap between neighbouring class centres and span
of the centres (the shortest arc that holds all 8; about 0° when they have collapsed), in degrees, at the end
and at steps 0/5/10/20/50/100; nearest-centre accuracy on the training points; the final mean class-centre
norm; the fraction of steps on which the gradient was clipped and the median pre-clip gradient norm. And, for
reference, the loss each head gives on 2-D features that carry no class information with its centres 45°
apart or all on one direction.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from marginface.heads.margin_head import MarginHead
from marginface.train.schedule import lr_factor

ROOT = Path(__file__).resolve().parents[2]
LOSSES = {"softmax": None, "normface": (1.0, 0.0, 0.0), "sphereface": (1.35, 0.0, 0.0), "cosface": (1.0, 0.0, 0.35),
          "arcface": (1.0, 0.5, 0.0)}
CHECKPOINTS = (0, 5, 10, 20, 50, 100)  # steps at which the smallest centre gap is recorded
TOY_COUNTS = [530, 236, 144, 121, 109, 77, 71, 60]


@dataclass(frozen=True)
class Setting:
    """One training recipe; the baseline is the toy's (configs/paper/toy_*.yaml)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_weight_decay: bool = True
    grad_clip: float | None = 5.0
    steps: int = 210
    warmup: int = 10
    s: float = 16.0
    head_std: float = 0.01
    bn: str = "affine"  # affine | noaffine | none
    balanced: bool = False
    margin_warmup: int = 0  # steps over which the margins ramp linearly from 0
    optimizer: str = "sgd"
    centres: str = "random"  # random: N(0, head_std²) | spread: 8 vectors 45° apart | fixed: spread, not trained
    spread_norm: float = 1.0  # norm of the spread / fixed centres


VARIANTS = {
    "baseline (toy config)": Setting(),
    "grad_clip off": Setting(grad_clip=None),
    "head init std 1": Setting(head_std=1.0),
    "no weight decay on centres": Setting(head_weight_decay=False),
    "lr 0.1": Setting(lr=0.1),
    "s 64": Setting(s=64.0),
    "s 4": Setting(s=4.0),
    "centres start 45° apart (norm 1)": Setting(centres="spread"),
    "centres start 45° apart (norm 0.01)": Setting(centres="spread", spread_norm=0.01),
    "centres fixed 45° apart (norm 1)": Setting(centres="fixed"),
    "final BN without affine": Setting(bn="noaffine"),
    "no final BN": Setting(bn="none"),
    "balanced classes": Setting(balanced=True),  # faces: 60 per person (480); gauss: 168 per cluster
    "margin warm-up (100 steps)": Setting(margin_warmup=100),
    "10x steps (2100)": Setting(steps=2100, warmup=100),
    "adamw": Setting(optimizer="adamw"),
}


def make_data(balanced: bool, noise: float, seed: int = 1234, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """8 Gaussian clusters in `dim` dimensions (means N(0, 1), isotropic noise std `noise`); fixed across runs."""
    g = torch.Generator().manual_seed(seed)
    counts = [sum(TOY_COUNTS) // 8] * 8 if balanced else TOY_COUNTS
    means = torch.randn(8, dim, generator=g)
    x = torch.cat([means[c] + noise * torch.randn(n, dim, generator=g) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return x, y


def face_data(aligned: Path, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The toy's own 1,348 aligned faces as grey side×side pixel vectors, standardised per pixel."""
    from marginface.data.folder import ImageFolderDataset

    dataset = ImageFolderDataset(aligned)
    images, labels = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        if sample is not None:
            grey = torch.from_numpy(sample.image).float().mean(2)[None, None]
            images.append(nn.functional.adaptive_avg_pool2d(grey, side).flatten())
            labels.append(sample.label)
    x = torch.stack(images)
    return (x - x.mean(0)) / (x.std(0) + 1e-6), torch.tensor(labels)


class Net(nn.Module):
    """dim → 64 (PReLU) → 64 (PReLU) → 2 bias-free linear → BatchNorm1d(2) (affine or not) or nothing."""

    def __init__(self, bn: str, dim: int) -> None:
        super().__init__()
        layers = [nn.Linear(dim, 64), nn.BatchNorm1d(64), nn.PReLU(64), nn.Linear(64, 64), nn.BatchNorm1d(64),
                  nn.PReLU(64), nn.Linear(64, 2, bias=False)]
        if bn != "none":
            layers.append(nn.BatchNorm1d(2, affine=bn == "affine"))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SoftmaxHead(nn.Module):
    """Unnormalised W·x, no bias, cross entropy (the toy's softmax)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 2) * std)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(feats @ self.weight.T, labels)


def gaps_and_accuracy(feats: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> tuple[float, float, float]:
    """Smallest angular gap between neighbouring centres, span of the centres (the shortest arc holding all of
    them, 360° − the largest gap; near 0 when they have collapsed), both in degrees, and nearest-centre
    accuracy."""
    order = np.sort(np.degrees(np.arctan2(centres[:, 1], centres[:, 0])) % 360)
    gaps = np.diff(np.concatenate([order, order[:1] + 360]))
    cos = (feats / np.linalg.norm(feats, axis=1, keepdims=True)) @ (
        centres / np.linalg.norm(centres, axis=1, keepdims=True)).T
    return float(gaps.min()), float(360.0 - gaps.max()), float((cos.argmax(1) == labels).mean())


def run(loss: str, st: Setting, seed: int, data: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Train once; return the statistics."""
    torch.manual_seed(seed)
    x, y = data
    net = Net(st.bn, x.shape[1])
    if LOSSES[loss] is None:
        head: nn.Module = SoftmaxHead(st.head_std)
    else:
        m1, m2, m3 = LOSSES[loss]
        head = MarginHead(2, 8, s=st.s, m1=m1, m2=m2, m3=m3)
        with torch.no_grad():
            head.weight.normal_(std=st.head_std)
    if st.centres != "random":
        angles = torch.arange(8) * (2 * math.pi / 8)
        with torch.no_grad():
            head.weight.copy_(st.spread_norm * torch.stack([angles.cos(), angles.sin()], 1))
        head.weight.requires_grad_(st.centres == "spread")
    groups = [{"params": list(net.parameters())}]
    if head.weight.requires_grad:
        groups.append({"params": [head.weight], "weight_decay": st.weight_decay if st.head_weight_decay else 0.0})
    if st.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=st.lr, weight_decay=st.weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=st.lr, momentum=st.momentum, weight_decay=st.weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    clipped, norms, trajectory = 0, [], {}
    for step in range(st.steps):
        if step in CHECKPOINTS:
            gap, span, _ = gaps_and_accuracy(np.ones((1, 2)), np.zeros(1, int), head.weight.detach().numpy())
            trajectory[step] = (gap, span)
        factor = lr_factor(step, st.steps, st.warmup)
        for g, b in zip(opt.param_groups, base, strict=True):
            g["lr"] = b * factor
        if st.margin_warmup and LOSSES[loss] is not None:
            ramp = min(1.0, step / st.margin_warmup)
            m1, m2, m3 = LOSSES[loss]
            head.margin = type(head.margin)(1.0 + ramp * (m1 - 1.0), ramp * m2, ramp * m3)
        idx = torch.randint(len(x), (64,))
        loss_value = head(net(x[idx]), y[idx])
        opt.zero_grad()
        loss_value.backward()
        params = [*net.parameters(), head.weight]
        total = float(torch.sqrt(sum(p.grad.pow(2).sum() for p in params if p.grad is not None)))
        norms.append(total)
        if st.grad_clip and total > st.grad_clip:
            clipped += 1
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(st.grad_clip / (total + 1e-6))
        opt.step()
    net.eval()
    with torch.no_grad():
        feats = net(x).numpy()
    centres = head.weight.detach().numpy()
    gap, span, acc = gaps_and_accuracy(feats, y.numpy(), centres)
    bn = net.layers[-1] if st.bn == "affine" else None
    beta_over_gamma = (float(np.linalg.norm(bn.bias.detach().numpy()) / np.linalg.norm(bn.weight.detach().numpy()))
                       if bn is not None else float("nan"))
    return {"min_gap_deg": gap, "centre_span_deg": span, "accuracy": acc,
            "centre_norm": float(np.linalg.norm(centres, axis=1).mean()),
            "clipped_fraction": clipped / st.steps, "median_grad_norm": float(np.median(norms)),
            "bn_beta_over_gamma": beta_over_gamma, "min_gap_and_span_deg_at_step": trajectory}


def hedge(s: float, samples: int = 100_000) -> dict:
    """Mean loss when the 2-D features carry no class information (uniform angles, uniform labels): class centres
    45° apart vs all 8 centres on one direction with every feature on it. A normalised head at fixed s can only
    lower its loss on uninformative features by collapsing its centres; softmax reaches log 8 with W → 0."""
    g = torch.Generator().manual_seed(0)
    phi = torch.rand(samples, generator=g) * 2 * math.pi
    feats, labels = torch.stack([phi.cos(), phi.sin()], 1), torch.randint(8, (samples,), generator=g)
    angles = torch.arange(8) * (2 * math.pi / 8)
    spread = torch.stack([angles.cos(), angles.sin()], 1)
    out = {"softmax": {"spread": math.log(8), "collapsed": math.log(8)}}
    for loss, margin in LOSSES.items():
        if margin is None:
            continue
        head = MarginHead(2, 8, s=s, m1=margin[0], m2=margin[1], m3=margin[2])
        with torch.no_grad():
            head.weight.copy_(spread)
            at_spread = float(head(feats, labels))
            head.weight.copy_(torch.tensor([[1.0, 0.0]]).expand(8, 2))
            collapsed = float(head(torch.tensor([[1.0, 0.0]]).expand(8, 2), torch.arange(8)))
        out[loss] = {"spread": at_spread, "collapsed": collapsed}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--data", choices=["gauss", "faces"], default="faces",
                        help="gauss: 8 Gaussian clusters; faces: the toy's aligned LFW faces as 16×16 grey pixels")
    parser.add_argument("--aligned", default=str(ROOT / "runs" / "paper" / "toy8" / "aligned"))
    parser.add_argument("--noise", type=float, default=1.0, help="cluster noise std (cluster means are N(0, 1))")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--losses", nargs="*", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "paper" / "toy_diagnosis.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.data == "faces":
        x, y = face_data(Path(args.aligned))
        fewest = int(torch.bincount(y).min())
        keep = torch.cat([torch.nonzero(y == c)[:fewest] for c in range(8)]).flatten()
        datasets = {False: (x, y), True: (x[keep], y[keep])}  # balanced: the first 60 faces of each person
    else:
        datasets = {b: make_data(b, args.noise) for b in (False, True)}
    report: dict = {"seeds": args.seeds, "data": args.data, "noise": args.noise, "baseline": Setting().__dict__,
                    "uninformative_features_loss": {f"s={s:g}": hedge(s) for s in (16.0, 64.0)}, "variants": {}}
    print("loss on uninformative 2-D features (centres 45° apart / collapsed):")
    for key, losses in report["uninformative_features_loss"].items():
        print(f"  {key}: " + ", ".join(f"{k} {v['spread']:.2f} / {v['collapsed']:.2f}" for k, v in losses.items()))
    for name, st in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        report["variants"][name] = {"changes": {k: v for k, v in st.__dict__.items()
                                                if v != getattr(Setting(), k)}, "losses": {}}
        cells = []
        for loss in args.losses:
            runs = [run(loss, st, seed, datasets[st.balanced]) for seed in range(args.seeds)]
            key = "min_gap_and_span_deg_at_step"
            summary = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k != key}
            summary[key] = {k: [round(float(np.median([r[key][k][i] for r in runs])), 2) for i in (0, 1)]
                            for k in runs[0][key]}
            summary["min_gap_deg_per_seed"] = [round(r["min_gap_deg"], 1) for r in runs]
            report["variants"][name]["losses"][loss] = summary
            cells.append(f"{loss} gap {summary['min_gap_deg']:5.1f}° span {summary['centre_span_deg']:5.1f}° "
                         f"acc {100 * summary['accuracy']:5.1f}% "
                         f"|W| {summary['centre_norm']:.2f} clip {100 * summary['clipped_fraction']:3.0f}%")
        print(f"{name:28s} " + " | ".join(cells), flush=True)
    report["elapsed_seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} in {report['elapsed_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
