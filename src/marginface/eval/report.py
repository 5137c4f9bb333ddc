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
        fig, ax = plt.subplots(figsize=(5, 4))
        far = np.maximum(np.asarray(v.verification.roc["far"]), 1e-6)
        ax.plot(far, v.verification.roc["tar"], label=f"{v.name} (AUC {v.verification.auc:.4f})")
        for key, tar in v.verification.tar_at_far.items():
            if tar is not None:
                ax.scatter([float(key)], [tar], s=18)
                ax.annotate(f"{tar:.3f}@{key}", (float(key), tar), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("FAR")
        ax.set_ylabel("TAR")
        ax.set_title(f"ROC — {v.name}")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"roc_{v.name}.png", dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5, 4))
        bins = np.linspace(-1, 1, 81)
        ax.hist(v.scores[v.issame], bins=bins, alpha=0.6, label="same")
        ax.hist(v.scores[~v.issame], bins=bins, alpha=0.6, label="different")
        ax.set_xlabel("cosine similarity")
        ax.set_title(f"Scores — {v.name}")
        ax.legend()
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
