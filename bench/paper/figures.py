"""Figures of the margins, drawn through the library's own target-logit transform (heads/margin.py).

    python bench/paper/figures.py            # -> bench/results/paper/target_logits.png, decision_boundaries.png
                                             #    and figures.json (the numbers quoted in docs/paper.md)

1. Target logit vs θ (0–180°) for each loss: `Margin.target_logit(cos θ)` itself, so the curves include the
   monotonic continuation ψ past m1·θ + m2 > π; the textbook cos(θ + m), which turns back up there, is drawn
   dashed beside ArcFace's for contrast.
2. Binary decision boundaries in (θ1, θ2), the paper's Table 1 / Figure 5: a sample is class 1 when its target
   logit for class 1 beats class 2's plain logit, ψ1(θ1) > cos θ2, and class 2 when ψ(θ2) > cos θ1; with a
   margin neither holds in a band between the two boundaries (shaded: the decision margin).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from marginface.heads import Margin

ROOT = Path(__file__).resolve().parents[2]
# (label, margin) drawn in both figures; the original SphereFace uses an integer m with ψ and no scale.
CURVES: list[tuple[str, Margin]] = [
    ("Softmax / NormFace: cos θ", Margin(1.0, 0.0, 0.0)),
    ("SphereFace (combined form): ψ(1.35 θ)", Margin(1.35, 0.0, 0.0)),
    ("SphereFace original: ψ(4 θ)", Margin(4.0, 0.0, 0.0)),
    ("CosFace: cos θ − 0.35", Margin(1.0, 0.0, 0.35)),
    ("ArcFace: ψ(θ + 0.5)", Margin(1.0, 0.5, 0.0)),
    ("Combined (1, 0.3, 0.2): ψ(θ + 0.3) − 0.2", Margin(1.0, 0.3, 0.2)),
]


def target_logit_curve(margin: Margin, theta: np.ndarray) -> np.ndarray:
    """The head's target logit (before the scale s) at angles `theta` (radians), via Margin.target_logit."""
    return margin.target_logit(torch.from_numpy(np.cos(theta)).double()).numpy()


def decision_regions(margin: Margin, theta1: np.ndarray, theta2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean grids (class 1 wins with margin, class 2 wins with margin) over θ1 × θ2 (radians, 'ij')."""
    t1, t2 = np.meshgrid(theta1, theta2, indexing="ij")
    class1 = target_logit_curve(margin, t1) > np.cos(t2)
    class2 = target_logit_curve(margin, t2) > np.cos(t1)
    return class1, class2


def boundary_theta1(margin: Margin, theta2: float, grid: int = 20_001) -> float:
    """Largest θ1 (radians) still classified as class 1 against a class-2 angle θ2: the class-1 boundary."""
    theta1 = np.linspace(0.0, math.pi, grid)
    inside = target_logit_curve(margin, theta1) > math.cos(theta2)
    return float(theta1[inside].max()) if inside.any() else 0.0


def plot_target_logits(path: Path) -> None:
    """Figure 1: target logit vs θ in degrees; left all losses, right SphereFace's integer m with ψ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theta = np.linspace(0.0, math.pi, 721)
    degrees = np.degrees(theta)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for label, margin in CURVES:
        if margin.m1 == 4.0:
            continue
        left.plot(degrees, target_logit_curve(margin, theta), label=label)
    left.plot(degrees, np.cos(theta + 0.5), "k:", label="cos(θ + 0.5) as written (turns up past 151.4°)")
    left.axvline(math.degrees(math.pi - 0.5), color="grey", lw=0.6)
    left.set(xlabel="θ between feature and its class centre (degrees)", ylabel="target logit / s",
             title="Target logit through Margin.target_logit", xlim=(0, 180), ylim=(-2.6, 1.05))
    left.legend(fontsize=8, loc="lower left")
    for m in (2, 3, 4):
        right.plot(degrees, target_logit_curve(Margin(float(m), 0.0, 0.0), theta), label=f"ψ({m}θ), m = {m}")
    right.plot(degrees, np.cos(4 * theta), "k:", label="cos(4θ) (not monotonic)")
    right.plot(degrees, np.cos(theta), color="grey", lw=0.8, label="cos θ")
    right.set(xlabel="θ (degrees)", ylabel="ψ(mθ) (× ‖x‖ in A-Softmax)",
              title="SphereFace as published: integer m, ψ(θ) = (−1)^k cos(mθ) − 2k", xlim=(0, 180))
    right.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_decision_boundaries(path: Path) -> None:
    """Figure 2: class-1 / class-2 regions in (θ1, θ2) per loss, decision margin shaded grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theta = np.linspace(0.0, math.pi, 361)
    degrees = np.degrees(theta)
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    softmax_ax, *margin_axes = axes.ravel()
    # Softmax: ‖x‖(‖W1‖cos θ1 − ‖W2‖cos θ2) + b1 − b2 = 0 moves with ‖x‖ (Table 1, first row).
    t1, t2 = np.meshgrid(theta, theta, indexing="ij")
    for norm, style in ((1.0, ":"), (3.0, "--"), (10.0, "-")):
        softmax_ax.contour(degrees, degrees, (norm * (np.cos(t1) - np.cos(t2)) + 0.5).T, levels=[0.0],
                           colors="C3", linestyles=style)
    softmax_ax.set_title("Softmax, b1 − b2 = 0.5: boundary at ‖x‖ = 1 (dots), 3, 10", fontsize=9)
    for ax, (label, margin) in zip(margin_axes, CURVES, strict=False):
        class1, class2 = decision_regions(margin, theta, theta)
        image = np.where(class1, 1.0, np.where(class2, 0.0, 0.5)).T  # rows = θ2
        ax.imshow(image, origin="lower", extent=(0, 180, 0, 180), cmap="RdBu_r", vmin=-0.2, vmax=1.2)
        ax.contour(degrees, degrees, class1.T.astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ax.contour(degrees, degrees, class2.T.astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ax.set_title(label, fontsize=9)
    for ax in axes.ravel()[: len(CURVES) + 1]:
        ax.plot([0, 180], [0, 180], color="white", lw=0.5)
        ax.set(xlabel="θ1 (degrees)", ylabel="θ2 (degrees)", xlim=(0, 180), ylim=(0, 180))
    overlay = axes.ravel()[-1]
    overlay.set_visible(True)
    for label, margin in CURVES:
        boundary = [math.degrees(boundary_theta1(margin, t, grid=4001)) for t in theta]
        overlay.plot(boundary, degrees, label=label.split(":")[0])
    overlay.set(xlabel="θ1 (degrees)", ylabel="θ2 (degrees)", xlim=(0, 180), ylim=(0, 180),
                title="class-1 boundaries (class 1 to the left)")
    overlay.legend(fontsize=7)
    fig.suptitle("Binary decision regions: red = class 1 with margin, blue = class 2 with margin, grey = margin",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def numbers() -> dict:
    """Quoted figures: the class-1 boundary at θ2 = 90° (margin width to the NormFace line) and monotonicity."""
    theta = np.linspace(0.0, math.pi, 20_001)
    out = {}
    for label, margin in CURVES:
        curve = target_logit_curve(margin, theta)
        boundary = math.degrees(boundary_theta1(margin, math.pi / 2))
        out[label] = {"m": [margin.m1, margin.m2, margin.m3],
                      "strictly_decreasing_on_0_pi": bool(np.all(np.diff(curve) < 0)),
                      "value_at_180deg": float(curve[-1]),
                      "class1_boundary_theta1_deg_at_theta2_90": boundary,
                      "margin_deg_at_theta2_90": 90.0 - boundary}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "paper"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_target_logits(out / "target_logits.png")
    plot_decision_boundaries(out / "decision_boundaries.png")
    figures = numbers()
    (out / "figures.json").write_text(json.dumps(figures, indent=1, ensure_ascii=False) + "\n")
    for label, row in figures.items():
        print(f"{label:45s} decreasing {row['strictly_decreasing_on_0_pi']}, boundary θ1 at θ2 = 90°: "
              f"{row['class1_boundary_theta1_deg_at_theta2_90']:.1f}° (margin {row['margin_deg_at_theta2_90']:.1f}°)")
    print(f"wrote {out / 'target_logits.png'} and {out / 'decision_boundaries.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
