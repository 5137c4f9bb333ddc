"""Identification (1:N): closed-set rank-k / CMC and open-set DIR at FPIR, from labelled embeddings.

Protocol: identities with at least `min_images` images are used. A share of them (`unknown_fraction`) is
kept out of the gallery entirely: their probes are impostors that the system should reject. Every other
identity contributes its first `gallery_per_identity` images (averaged, normalised) as its gallery
template; its remaining images are probes. Scores are cosine similarities computed by the same exact
search as the deploy gallery (marginface.infer.search.TemplateIndex), so `identify` against a gallery
enrolled with the same split reproduces these numbers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from marginface.errors import UsageError
from marginface.eval.verification import impostor_threshold, not_measurable
from marginface.infer.search import TemplateIndex, unit_rows

DEFAULT_FPIRS = (1e-1, 1e-2)


@dataclass
class IdentificationSplit:
    """Index lists into the embedding array: gallery (with identity), known probes, unknown probes."""

    gallery: list[list[int]]  # per enrolled identity, the indices averaged into its template
    gallery_labels: np.ndarray
    probes: np.ndarray
    probe_labels: np.ndarray
    unknown_probes: np.ndarray


@dataclass
class IdentificationResult:
    """Closed-set CMC and open-set DIR@FPIR."""

    rank1: float
    rank5: float
    cmc: list[float]
    dir_at_fpir: dict[str, float | None]
    fpir_notes: dict[str, str] = field(default_factory=dict)
    num_gallery: int = 0
    num_probes: int = 0
    num_unknown_probes: int = 0
    threshold_at_fpir: dict[str, float | None] = field(default_factory=dict)  # lowest score accepted as known
    no_face: list[str] = field(default_factory=list)  # images centre-cropped because no face was found
    warnings: list[str] = field(default_factory=list)  # why these numbers should not be trusted, if they should not

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dict(vars(self))


def split_gallery_probes(labels: np.ndarray, gallery_per_identity: int = 1, min_images: int = 2,
                         unknown_fraction: float = 0.3, seed: int = 0) -> IdentificationSplit:
    """Deterministic gallery / probe / impostor split of a labelled image list (see module docstring)."""
    labels = np.asarray(labels)
    if not 0.0 <= unknown_fraction < 1.0:
        raise UsageError(f"unknown_fraction must be in [0, 1), got {unknown_fraction}")
    if min_images <= gallery_per_identity:
        raise UsageError(f"min_images ({min_images}) must exceed gallery_per_identity ({gallery_per_identity})")
    identities, counts = np.unique(labels, return_counts=True)
    eligible = identities[counts >= min_images]
    if len(eligible) < 2:
        raise UsageError(f"need at least 2 identities with >= {min_images} images, found {len(eligible)}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(eligible)
    unknown = set(shuffled[: int(round(unknown_fraction * len(eligible)))].tolist())
    gallery, gallery_labels, probes, probe_labels, unknown_probes = [], [], [], [], []
    for identity in eligible:
        indices = np.flatnonzero(labels == identity)
        if identity in unknown:
            unknown_probes.extend(indices.tolist())
            continue
        gallery.append(indices[:gallery_per_identity].tolist())
        gallery_labels.append(identity)
        probes.extend(indices[gallery_per_identity:].tolist())
        probe_labels.extend([identity] * (len(indices) - gallery_per_identity))
    return IdentificationSplit(gallery, np.asarray(gallery_labels), np.asarray(probes, np.int64),
                               np.asarray(probe_labels), np.asarray(unknown_probes, np.int64))


def gallery_templates(embeddings: np.ndarray, split: IdentificationSplit) -> np.ndarray:
    """(G, D) unit float32 templates: per enrolled identity, its gallery images' unit embeddings averaged
    (one image: that image's unit embedding, bit for bit what the deploy path enrols)."""
    emb = unit_rows(embeddings)
    return np.concatenate([emb[idx[0]][None] if len(idx) == 1 else unit_rows(emb[idx].mean(axis=0))
                           for idx in split.gallery])


def evaluate_identification(embeddings: np.ndarray, split: IdentificationSplit, max_rank: int = 20,
                            fpirs: tuple[float, ...] = DEFAULT_FPIRS) -> IdentificationResult:
    """CMC of known probes against the gallery templates; DIR@FPIR using the unknown probes."""
    emb = unit_rows(embeddings)
    index = TemplateIndex(emb.shape[1])
    index.add(np.arange(len(split.gallery)), np.arange(len(split.gallery)), gallery_templates(embeddings, split))
    _, scores = index.identity_scores(emb[split.probes])  # (P, G) exact float64, columns = gallery order
    column_of = {label: column for column, label in enumerate(split.gallery_labels.tolist())}
    true_column = np.array([column_of[label] for label in split.probe_labels.tolist()], dtype=np.int64)
    true_score = scores[np.arange(len(scores)), true_column]
    rank = (scores > true_score[:, None]).sum(axis=1)  # 0 = correct at rank 1 (ties favour the truth)
    ranks = min(max_rank, len(split.gallery))
    cmc = [float(np.mean(rank < k)) for k in range(1, ranks + 1)]
    top_correct = rank == 0
    dirs: dict[str, float | None] = {}
    thresholds: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    unknown_max = index.identity_scores(emb[split.unknown_probes])[1].max(axis=1) if len(split.unknown_probes) \
        else None
    for target in fpirs:
        key = f"{target:g}"
        if unknown_max is None:
            dirs[key], thresholds[key], notes[key] = None, None, "no unknown probes (unknown_fraction = 0)"
            continue
        # lowest score accepted as known: just above the best score of the highest rejected impostor
        lowest = impostor_threshold(unknown_max, target, accept_all=-1.0)
        thresholds[key] = lowest
        if lowest is None:
            dirs[key], notes[key] = None, not_measurable(len(unknown_max), "unknown probes", "FPIR", target)
            continue
        dirs[key] = float(np.mean(top_correct & (true_score >= lowest)))
    return IdentificationResult(
        rank1=cmc[0], rank5=cmc[min(4, len(cmc) - 1)], cmc=cmc, dir_at_fpir=dirs, fpir_notes=notes,
        num_gallery=len(split.gallery), num_probes=len(split.probes), num_unknown_probes=len(split.unknown_probes),
        threshold_at_fpir=thresholds,
    )
