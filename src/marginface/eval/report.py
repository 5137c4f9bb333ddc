"""Evaluation reports: report.json with every number and the options, plus ROC / histogram / CMC plots."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from marginface import __version__
from marginface.eval.identification import IdentificationResult
from marginface.eval.pipeline import PairSetEvaluation
from marginface.eval.verification import VerificationResult


def write_report(out_dir: str | Path, model: str, options: dict, verification: list[PairSetEvaluation],
                 identification: dict[str, IdentificationResult] | None = None,
                 perturbation: dict | None = None) -> Path:
    """Write report.json and the PNG plots into out_dir; returns the JSON path. `perturbation` (specs,
    where applied, definitions) is recorded under its own key when the images were perturbed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "marginface_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(), "model": model, "options": options,
        "verification": [v.to_dict() for v in verification],
        "identification": {k: v.to_dict() for k, v in (identification or {}).items()},
    }
    if perturbation:
        report["perturbation"] = perturbation
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    _plot(out, verification, identification or {})
    return path


def _plot(out: Path, verification: list[PairSetEvaluation], identification: dict[str, IdentificationResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for v in verification:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        _plot_roc(ax, v)
        fig.tight_layout()
        fig.savefig(out / f"roc_{v.name}.png", dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5.5, 4))
        bins = np.linspace(-1, 1, 81)
        ax.hist(v.scores[v.issame], bins=bins, alpha=0.6, label="same")
        ax.hist(v.scores[~v.issame], bins=bins, alpha=0.6, label="different")
        for label, threshold, style in score_thresholds(v.verification):
            ax.axvline(threshold, color="black", linestyle=style, linewidth=0.9, label=label)
        ax.set_xlabel("cosine similarity")
        ax.set_title(f"Scores — {v.name}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"scores_{v.name}.png", dpi=110)
        plt.close(fig)

    for name, result in identification.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(range(1, len(result.cmc) + 1), result.cmc, marker="o", markersize=3)
        ax.set_xlabel("rank")
        ax.set_ylabel("identification rate")
        ax.set_title(f"CMC — {name}")
        ax.set_ylim(0, 1.01)
        fig.tight_layout()
        fig.savefig(out / f"cmc_{name}.png", dpi=110)
        plt.close(fig)


def measurable_roc(verification: VerificationResult) -> tuple[np.ndarray, np.ndarray, float]:
    """(far, tar, smallest measurable FAR): the ROC points at or above 1 / number of impostor pairs, the
    smallest non-zero FAR the impostors can show (below it a curve would be extrapolation, not measurement)."""
    impostors = max(1, verification.num_pairs - verification.num_same)
    smallest = 1.0 / impostors
    far = np.asarray(verification.roc.get("far", []), dtype=float)
    tar = np.asarray(verification.roc.get("tar", []), dtype=float)
    keep = far >= smallest * (1 - 1e-9)
    return far[keep], tar[keep], smallest


def score_thresholds(verification: VerificationResult) -> list[tuple[str, float, str]]:
    """(label, threshold, line style) of the thresholds a report chose: best accuracy and each FAR's."""
    marks = []
    if verification.accuracy_threshold is not None:
        marks.append((f"best accuracy {verification.accuracy_threshold:.3f}", verification.accuracy_threshold, "-"))
    styles = iter(["--", ":", "-.", (0, (1, 3))] * 4)
    for key, threshold in verification.threshold_at_far.items():
        if threshold is not None:
            marks.append((f"FAR {key}: {threshold:.3f}", threshold, next(styles)))
    return marks


def _plot_roc(ax, evaluation: PairSetEvaluation) -> None:
    """ROC from the smallest measurable FAR up; the region below it shaded and labelled, not drawn; the
    TAR@FAR points named in the legend (no labels on the curve, so none overlap)."""
    result = evaluation.verification
    far, tar, smallest = measurable_roc(result)
    ax.plot(far, tar, label=f"{evaluation.name} (AUC {result.auc:.4f})")
    left = smallest / 10
    ax.axvspan(left, smallest, color="0.85", zorder=0,
               label=f"FAR < 1/{max(1, result.num_pairs - result.num_same):,} impostors: not measurable")
    for key, value in result.tar_at_far.items():
        if value is not None and float(key) >= smallest:
            ax.scatter([float(key)], [value], s=18, zorder=3, label=f"TAR {value:.3f} @ FAR {key}")
    ax.set_xscale("log")
    ax.set_xlim(left, 1.0)
    ax.set_xlabel(f"FAR (measured from {smallest:.1e})")
    ax.set_ylabel("TAR")
    ax.set_title(f"ROC — {evaluation.name}")
    ax.legend(loc="lower right", fontsize=7)


def summary_table(verification: list[PairSetEvaluation], identification: dict[str, IdentificationResult]) -> str:
    """A short plain-text table for the console, one row per set."""
    lines = [f"{'set':<14}{'pairs':>7}{'accuracy':>18}{'AUC':>9}{'EER':>8}{'TAR@1e-3':>10}"]
    for v in verification:
        r = v.verification
        tar = r.tar_at_far.get("0.001")
        lines.append(f"{v.name:<14}{r.num_pairs:>7}{100 * r.accuracy_mean:>11.2f} ± {100 * r.accuracy_std:4.2f}"
                     f"{r.auc:>9.4f}{r.eer:>8.4f}{'n/a' if tar is None else f'{tar:.4f}':>10}")
    for name, result in identification.items():
        dirs = ", ".join(f"DIR@{k}={'n/a' if v is None else f'{v:.4f}'}" for k, v in result.dir_at_fpir.items())
        lines.append(f"{name:<14} rank-1 {result.rank1:.4f}  rank-5 {result.rank5:.4f}  {dirs}")
    return "\n".join(lines)
