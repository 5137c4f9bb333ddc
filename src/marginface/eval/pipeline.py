"""From a model and a data set to metrics: images stream through in batches (never one giant array),
decoding and alignment overlapping with the model on a background thread."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marginface.data.folder import scan_identity_folder
from marginface.data.image import decode_image
from marginface.data.pairs import PairSet
from marginface.data.perturb import Perturbation, apply_perturbations, image_seed
from marginface.errors import InputError
from marginface.eval.identification import (
    IdentificationResult,
    IdentificationSplit,
    evaluate_identification,
    split_gallery_probes,
)
from marginface.eval.verification import ThresholdSearch, VerificationResult, evaluate_verification
from marginface.infer.embedder import Embedder, flip_embed
from marginface.infer.prepare import FacePreprocessor
from marginface.infer.search import unit_rows

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def embed_images(count: int, load: Callable[[int], np.ndarray], embedder: Embedder, batch_size: int = 64,
                 flip: bool = True, progress: Progress | None = None) -> np.ndarray:
    """(count, D) raw embeddings of images 0..count−1 (flip-test sums when `flip`), batch by batch."""
    if count == 0:
        raise InputError("no images to embed")
    batches: queue.Queue = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for start in range(0, count, batch_size):
                batches.put(np.stack([load(i) for i in range(start, min(start + batch_size, count))]))
        except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
            batches.put(err)
        batches.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    outputs, done = [], 0
    while (item := batches.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        outputs.append(flip_embed(embedder, item, flip))
        done += len(item)
        if progress is not None:
            progress(done, count)
    thread.join()
    return np.concatenate(outputs)


@dataclass
class PairSetEvaluation:
    """Verification of one pair set, with the embedding statistics behind it."""

    name: str
    verification: VerificationResult
    raw_norm_mean: float
    raw_norm_std: float
    num_images: int
    aligned: int
    fallbacks: int
    scores: np.ndarray = field(repr=False)
    issame: np.ndarray = field(repr=False)
    no_face: list[str] = field(default_factory=list)  # images centre-cropped because no face was found
    warnings: list[str] = field(default_factory=list)  # why these numbers should not be trusted, if they should not
    perturbation: list[str] = field(default_factory=list)
    perturb_before_detection: bool = False

    def to_dict(self) -> dict:
        """JSON-ready dict (scores left out)."""
        return {"name": self.name, **self.verification.to_dict(), "raw_norm_mean": self.raw_norm_mean,
                "raw_norm_std": self.raw_norm_std, "num_images": self.num_images, "aligned": self.aligned,
                "fallback_crops": self.fallbacks, "no_face": self.no_face, "warnings": self.warnings,
                "perturbation": self.perturbation, "perturb_before_detection": self.perturb_before_detection}


FALLBACK_WARN_SHARE = 0.01  # more centre-crop fallbacks than this and the accuracy says little about the model


def quality_warnings(raw: np.ndarray, fallbacks: int, detector: bool) -> list[str]:
    """Reasons a verification result is degenerate: zero, non-finite or constant embeddings (the scores carry
    no information, AUC 0.5), or too many photos in which no face was found."""
    warnings = []
    finite = np.isfinite(raw).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], raw, 0.0), axis=1)
    if not finite.all():
        warnings.append(f"{int((~finite).sum())} of {len(raw)} embeddings are NaN/Inf: the model is broken")
    if finite.any() and float(norms[finite].max()) < 1e-6:
        warnings.append("every embedding is zero: all pairs score alike, the metrics are chance level (AUC 0.5)")
    elif finite.sum() > 1:
        unit = unit_rows(raw[finite])
        if float(np.abs(unit - unit[0]).max()) < 1e-4:
            warnings.append("every image gets the same embedding: all pairs score alike, the metrics are chance "
                            "level (AUC 0.5)")
    if fallbacks > FALLBACK_WARN_SHARE * len(raw):
        cause = "no face was found" if detector else "they are not aligned crops and no --detector was given"
        warnings.append(f"{fallbacks} of {len(raw)} images ({100 * fallbacks / len(raw):.1f} %) were centre-cropped "
                        f"because {cause}; the accuracy says little about the model")
    return warnings


def _image_name(pair_set: PairSet, index: int) -> str:
    source = pair_set.images[index]
    return str(source) if isinstance(source, Path) else f"{pair_set.name} image {index}"


def perturbed_face(rgb: np.ndarray, prep: FacePreprocessor, perturbations: tuple[Perturbation, ...] = (),
                   before_detection: bool = False, seed: int = 0, name: str | None = None) -> np.ndarray:
    """The aligned face of `rgb` with the perturbations applied to the aligned face, or to the photo before
    detection (so a degraded photo can fail detection, counted by `prep.fallbacks`)."""
    if not perturbations:
        return prep(rgb, name)
    if before_detection:  # a downscaled photo stays small: the detector sees a low-resolution photo
        return prep(apply_perturbations(rgb, perturbations, seed, restore_size=False), name)
    return apply_perturbations(prep(rgb, name), perturbations, seed)


def pair_scores(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine score of each (i, j) row of `pairs` between the unit-normalised rows i and j of `embeddings`."""
    unit = unit_rows(embeddings)
    return np.sum(unit[pairs[:, 0]] * unit[pairs[:, 1]], axis=1)


def evaluate_pair_set(pair_set: PairSet, embedder: Embedder, preprocessor: FacePreprocessor | None = None,
                      flip: bool = True, batch_size: int = 64, search: ThresholdSearch = "exact",
                      progress: Progress | None = None, perturbations: tuple[Perturbation, ...] = (),
                      perturb_before_detection: bool = False) -> PairSetEvaluation:
    """Embed every image of `pair_set` once (optionally perturbed, seeded per image), score pairs by cosine,
    run the k-fold protocol and ROC."""
    prep = preprocessor or FacePreprocessor(size=embedder.input_size)

    def load(i: int) -> np.ndarray:
        return perturbed_face(pair_set.load_image(i), prep, perturbations, perturb_before_detection,
                              image_seed(pair_set.images[i]), _image_name(pair_set, i))

    raw = embed_images(len(pair_set.images), load, embedder, batch_size, flip, progress)
    warnings = quality_warnings(raw, prep.fallbacks, prep.detector is not None)  # returned, shown by the caller
    norms = np.linalg.norm(raw, axis=1)
    scores = pair_scores(raw, pair_set.pairs)
    result = evaluate_verification(scores, pair_set.issame, pair_set.folds, search)
    log.info("%s: accuracy %.4f ± %.4f over %d folds", pair_set.name, result.accuracy_mean, result.accuracy_std,
             len(result.folds))
    return PairSetEvaluation(pair_set.name, result, float(norms.mean()), float(norms.std()),
                             len(pair_set.images), prep.aligned, prep.fallbacks, scores, pair_set.issame,
                             list(prep.no_face), warnings, [p.spec for p in perturbations],
                             perturb_before_detection)


@dataclass
class IdentificationFiles:
    """The files of an identity folder's identification split, as evaluate_identity_folder uses them."""

    paths: list[Path]  # every image of the folder, in label order (indices below point here)
    names: list[str]  # identity name of each path
    split: IdentificationSplit

    @property
    def gallery(self) -> list[tuple[str, list[Path]]]:
        """(identity, images enrolled for it) per gallery identity."""
        return [(self.names[idx[0]], [self.paths[i] for i in idx]) for idx in self.split.gallery]

    @property
    def probes(self) -> list[tuple[str, Path]]:
        """(true identity, image) of every known probe."""
        return [(self.names[i], self.paths[i]) for i in self.split.probes.tolist()]

    @property
    def unknown(self) -> list[tuple[str, Path]]:
        """(identity, image) of every impostor probe (identities kept out of the gallery)."""
        return [(self.names[i], self.paths[i]) for i in self.split.unknown_probes.tolist()]


def identification_files(root: str | Path, min_images: int = 2, gallery_per_identity: int = 1,
                         unknown_fraction: float = 0.3, seed: int = 0) -> IdentificationFiles:
    """The deterministic gallery / probe / impostor split of root/<identity>/<image> that eval uses."""
    class_names, items = scan_identity_folder(Path(root))
    labels = np.array([label for _, label in items])
    split = split_gallery_probes(labels, gallery_per_identity, min_images, unknown_fraction, seed)
    return IdentificationFiles([path for path, _ in items], [class_names[label] for _, label in items], split)


def evaluate_identity_folder(root: str | Path, embedder: Embedder, preprocessor: FacePreprocessor | None = None,
                             min_images: int = 2, gallery_per_identity: int = 1, unknown_fraction: float = 0.3,
                             flip: bool = True, batch_size: int = 64, seed: int = 0,
                             progress: Progress | None = None, perturbations: tuple[Perturbation, ...] = (),
                             perturb_before_detection: bool = False) -> IdentificationResult:
    """Closed- and open-set identification over root/<identity>/<image> (identities with >= min_images)."""
    files = identification_files(root, min_images, gallery_per_identity, unknown_fraction, seed)
    split = files.split
    used = np.unique(np.concatenate([np.concatenate(split.gallery), split.probes, split.unknown_probes]))
    prep = preprocessor or FacePreprocessor(size=embedder.input_size)

    def load(i: int) -> np.ndarray:
        path = files.paths[int(used[i])]
        return perturbed_face(decode_image(path.read_bytes(), str(path)), prep, perturbations,
                              perturb_before_detection, image_seed(path), str(path))

    emb_used = embed_images(len(used), load, embedder, batch_size, flip, progress)
    embeddings = np.zeros((len(files.paths), emb_used.shape[1]), np.float32)
    embeddings[used] = emb_used
    result = evaluate_identification(embeddings, split)
    result.no_face = list(prep.no_face)
    result.warnings = quality_warnings(emb_used, prep.fallbacks, prep.detector is not None)
    return result
