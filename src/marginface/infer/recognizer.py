"""FaceRecognizer: photo in, every face out with box, landmarks, quality signals and a unit embedding, plus
verify (1:1) and identify (1:N against a Gallery). Detection, alignment and embedding are the steps
`marginface eval` uses (YuNet, main-face choice, 5-point similarity warp, flip test), so decisions here
and numbers there come from one code path. One instance may serve several threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from marginface.data.align import ARCFACE_TEMPLATE, align_face
from marginface.data.folder import IMAGE_EXTENSIONS
from marginface.errors import InputError
from marginface.fileio import sha256_file
from marginface.infer.detect import Face, YuNetDetector, pick_main_face
from marginface.infer.embedder import (
    Embedder,
    OnnxEmbedder,
    OnnxInputSpec,
    flip_embed,
    load_embedder,
    model_folder,
)
from marginface.infer.faces import (
    FaceResult,
    ModelFingerprint,
    NoFaceError,  # noqa: F401  (re-exported: callers import it from here)
    Verification,
    main_face,
)
from marginface.infer.images import load_image
from marginface.infer.search import exact_scores, unit_rows
from marginface.infer.thresholds import Threshold, ThresholdError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from marginface.infer.gallery import Gallery, Identified

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
DEFAULT_MAX_SIDE = 1280


def model_fingerprint(model: str | Path, embedder: Embedder) -> ModelFingerprint:
    """Fingerprint of a loaded embedder: weights hash of the file (ONNX) or safetensors (exported model)."""
    path = Path(model)
    weights = path if path.suffix == ".onnx" else model_folder(path) / "model.safetensors"
    if isinstance(embedder, OnnxEmbedder):
        spec = embedder.spec
    else:
        spec = OnnxInputSpec()  # TorchEmbedder: RGB NCHW, (x - 127.5) / 127.5
    size = embedder.input_size
    probe = np.asarray(embedder.embed(np.zeros((1, size, size, 3), np.uint8)))
    if probe.ndim != 2 or probe.shape[0] != 1 or probe.shape[1] < 2 or not np.isfinite(probe).all():
        raise InputError(f"{model}: not an image -> embedding model: one {size}x{size} face gave an output of shape "
                         f"{probe.shape}, expected (1, D) finite values")
    dim = int(probe.shape[1])
    return ModelFingerprint(sha256_file(weights), size, spec.layout, spec.channel_order, spec.mean, spec.std, dim)


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the image files under given folders (recursive, sorted)."""
    out: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(path)
    return out


class FaceRecognizer:
    """Detector + embedding model + operating threshold: faces(), verify(), identify(), scan()."""

    def __init__(self, model: str | Path = "auto", detector: str | Path | None = "auto", *,
                 threshold: Threshold | float | None = None, flip: bool = True, spec: OnnxInputSpec | None = None,
                 input_name: str | None = None, detector_score: float = 0.6, max_side: int = DEFAULT_MAX_SIDE,
                 batch_size: int = 32, cache_dir: str | Path | None = None, mirror: str | None = None,
                 threads: int | None = None) -> None:
        from marginface.infer.published import resolve_model

        auto = str(model) == "auto"
        self.model_path = resolve_model("model", cache_dir, mirror) if auto else Path(model)
        if str(detector) == "auto":
            detector = resolve_model("detector", cache_dir, mirror)
        self.detector_path = Path(detector) if detector is not None else None
        self.embedder = load_embedder(self.model_path, spec, input_name, threads)
        self.detector = YuNetDetector(self.detector_path, score_threshold=detector_score) if detector else None
        self.fingerprint = model_fingerprint(self.model_path, self.embedder)
        self.threshold: Threshold | None = Threshold.resolve("verify", value=threshold, model="auto" if auto else model,
                                                             required=False)
        self.flip = flip
        self.max_side = max_side
        self.batch_size = batch_size
        self._detect_lock = threading.Lock()  # the OpenCV detector keeps per-call input-size state

    @classmethod
    def from_gallery(cls, gallery: Gallery, **kwargs) -> FaceRecognizer:
        """The recognizer a gallery was built with (its model, detector and threshold); checks the fingerprint."""
        from marginface.infer.gallery import GalleryModelMismatch

        kwargs.setdefault("flip", gallery.flip)
        recognizer = cls(gallery.model_path, gallery.detector_path, threshold=gallery.threshold, **kwargs)
        if recognizer.fingerprint.key != gallery.fingerprint.key:
            raise GalleryModelMismatch(f"gallery {gallery.path} was built with model {gallery.fingerprint.key}, "
                                       f"but {gallery.model_path} now is {recognizer.fingerprint.key}")
        return recognizer

    # -- detection and alignment ------------------------------------------------------------------------
    def _detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in original pixels, main face first then by score; large photos detected downscaled."""
        height, width = rgb.shape[:2]
        size = self.embedder.input_size
        if self.detector is None:
            if (height, width) != (size, size):
                raise InputError(f"no detector: images must be aligned {size}x{size} faces, got {width}x{height}")
            return [Face(np.array([0.0, 0.0, size, size]), ARCFACE_TEMPLATE * (size / 112.0), 1.0)]
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
            with self._detect_lock:
                found = self.detector.detect(small)
            faces = [Face(f.box / scale, f.landmarks / scale, f.score) for f in found]
        else:
            with self._detect_lock:
                faces = self.detector.detect(rgb)
        main = pick_main_face(faces, rgb.shape)
        return [main] + [f for f in faces if f is not main] if main is not None else []

    def _align(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        size = self.embedder.input_size
        if self.detector is None:
            return rgb[None]
        return np.stack([align_face(rgb, f.landmarks, size) for f in faces])

    def _embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unit embeddings, raw norms) of aligned crops, batch by batch."""
        raws = [flip_embed(self.embedder, crops[i:i + self.batch_size], self.flip)
                for i in range(0, len(crops), self.batch_size)]
        raw = np.concatenate(raws)
        return unit_rows(raw), np.linalg.norm(raw, axis=1) / (2.0 if self.flip else 1.0)

    @staticmethod
    def _results(faces: list[Face], embeddings: np.ndarray, norms: np.ndarray) -> list[FaceResult]:
        return [FaceResult(tuple(float(v) for v in f.box), np.asarray(f.landmarks, np.float64), float(f.score),
                           e, float(n), float(min(f.box[2], f.box[3])))
                for f, e, n in zip(faces, embeddings, norms, strict=True)]

    # -- public API ---------------------------------------------------------------------------------------
    def faces(self, image, *, name: str | None = None) -> list[FaceResult]:
        """Every face in `image` (path, bytes, RGB array or PIL image), main face first; [] when none."""
        rgb = load_image(image, name=name)
        found = self._detect(rgb)
        if not found:
            return []
        embeddings, norms = self._embed(self._align(rgb, found))
        return self._results(found, embeddings, norms)

    def main_face(self, image, *, name: str | None = None) -> FaceResult:
        """The face the photo is of; raises NoFaceError naming the image when there is none."""
        label = name or (str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>")
        return main_face(self.faces(image, name=name), label)

    def compare(self, a: FaceResult | np.ndarray, b: FaceResult | np.ndarray) -> float:
        """Cosine score of two faces (or unit embeddings), computed exactly as gallery search does."""
        ea = a.embedding if isinstance(a, FaceResult) else np.asarray(a, np.float32)
        eb = b.embedding if isinstance(b, FaceResult) else np.asarray(b, np.float32)
        return float(exact_scores(ea, eb.reshape(1, -1))[0, 0])

    def verify(self, a, b, *, threshold: Threshold | None = None) -> Verification:
        """Are the main faces of images `a` and `b` the same person? Needs a threshold (given or the model's)."""
        threshold = self._verification_threshold(threshold)
        return self.decide(self.main_face(a, name=_label(a, "first image")),
                           self.main_face(b, name=_label(b, "second image")), threshold=threshold)

    def decide(self, a: FaceResult, b: FaceResult, *, threshold: Threshold | None = None) -> Verification:
        """The 1:1 decision for two faces already found (verify's last step, also the service's)."""
        threshold = self._verification_threshold(threshold)
        score = self.compare(a, b)
        return Verification(score, threshold.accepts(score), threshold)

    def _verification_threshold(self, threshold: Threshold | None) -> Threshold:
        """`threshold`, else the recognizer's own; ThresholdError when there is neither."""
        threshold = threshold or self.threshold
        if threshold is None:
            raise ThresholdError("no verification threshold: give threshold=Threshold.from_report(report.json, "
                                 "far=...) or Threshold.fixed(value); only model='auto' ships a calibrated one")
        return threshold

    def identify(self, image, gallery: Gallery, k: int = 1, *, name: str | None = None) -> list[Identified]:
        """Every face of `image` with its decision against `gallery` (main face first)."""
        return self.identify_faces(self.faces(image, name=name), gallery, k)

    def identify_faces(self, faces: list[FaceResult], gallery: Gallery, k: int = 1) -> list[Identified]:
        """Decisions against `gallery` for faces already found (identify's last step, also the service's)."""
        return gallery.identify_faces(faces, k=k, fingerprint=self.fingerprint)

    def scan(self, paths: Iterable[str | Path], progress: Progress | None = None,
             ) -> Iterator[tuple[Path, list[FaceResult] | Exception]]:
        """(path, faces or the error that image raised) for image files and folders, embedded in batches."""
        files = image_files(paths)
        pending: list[tuple[Path, list[Face] | Exception, np.ndarray | None]] = []
        done = 0

        def flush() -> Iterator[tuple[Path, list[FaceResult] | Exception]]:
            crops = [c for _, _, c in pending if c is not None]
            embeddings, norms = self._embed(np.concatenate(crops)) if crops else (None, None)
            start = 0
            for path, found, crop in pending:
                if crop is None:
                    yield path, found if isinstance(found, Exception) else []
                    continue
                end = start + len(crop)
                yield path, self._results(found, embeddings[start:end], norms[start:end])
                start = end
            pending.clear()

        queued = 0
        for path in files:
            try:
                rgb = load_image(path)
                found = self._detect(rgb)
                pending.append((path, found, self._align(rgb, found) if found else None))
                queued += len(found)
            except (ValueError, OSError, cv2.error) as err:  # reported for this file; the scan goes on
                pending.append((path, err, None))
            if queued >= self.batch_size or len(pending) >= self.batch_size:
                for item in flush():
                    done += 1
                    if progress is not None:
                        progress(done, len(files))
                    yield item
                queued = 0
        for item in flush():
            done += 1
            if progress is not None:
                progress(done, len(files))
            yield item


def _label(image, fallback: str) -> str:
    return str(image) if isinstance(image, (str, Path)) else fallback

