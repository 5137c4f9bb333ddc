"""FaceRecognizer: photo in, every face out with box, landmarks, quality signals and a unit embedding, plus
verify (1:1) and identify (1:N against a Gallery). Detection, alignment and embedding are the steps
`marginface eval` uses (YuNet, main-face choice, 5-point similarity warp, flip test), so decisions here
and numbers there come from one code path. One instance may serve several threads."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from marginface.data.align import ARCFACE_TEMPLATE, align_face
from marginface.data.folder import list_images
from marginface.errors import InputError, UsageError
from marginface.fileio import sha256_file
from marginface.infer.detect import Face, YuNetDetector, pick_main_face
from marginface.infer.embedder import (
    Embedder,
    OnnxEmbedder,
    OnnxInputSpec,
    flip_embed,
    load_embedder,
    model_folder,
    worker_embedder,
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
ScanItem = tuple[Path, list[FaceResult] | Exception]
DEFAULT_MAX_SIDE = 1280
_Prepared = tuple[Path, list[Face] | Exception, np.ndarray | None]  # (path, faces or error, aligned crops)


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
            out.extend(list_images(path, recursive=True))
        else:
            out.append(path)
    return out


def scan_workers(workers: int | None = None) -> int:
    """How many workers a scan runs: `workers` as given (an integer >= 1), or by default one per CPU core
    this process may run on (its affinity mask, so `taskset -c 0` means 1)."""
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - platforms without sched_getaffinity (macOS, Windows)
            return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


@dataclass
class _ScanSlot:
    """What one scan worker uses alone: its own detector (OpenCV's keeps per-call state) and embedder."""

    detector: YuNetDetector | None
    embedder: Embedder


class FaceRecognizer:
    """Detector + embedding model + operating threshold: faces(), verify(), identify(), scan()."""

    def __init__(self, model: str | Path = "auto", detector: str | Path | None = "auto", *,
                 threshold: Threshold | float | None = None, flip: bool = True, spec: OnnxInputSpec | None = None,
                 input_name: str | None = None, detector_score: float = 0.6, max_side: int = DEFAULT_MAX_SIDE,
                 batch_size: int = 32, cache_dir: str | Path | None = None, mirror: str | None = None,
                 threads: int | None = None) -> None:
        """Load the detector and the embedding model.

        Args:
            model: ONNX file, exported model folder or training run; 'auto' fetches the published MobileFaceNet.
            detector: YuNet ONNX file; 'auto' the published one; None when every image is an aligned 112x112 face.
            threshold: verify's operating threshold (a number or a Threshold); None: the shipped one for 'auto',
                else verify needs one passed per call (see Threshold.resolve).
            flip: average each embedding with its horizontal flip's (what galleries and reports assume).
            spec: how the model wants its input (size, layout, channels, mean, std); None: read from the model.
            input_name: the ONNX input to feed, when the model has several.
            detector_score: the detector's confidence cut (0-1).
            max_side: images are downscaled to this longest side before detection (pixels).
            batch_size: faces embedded per model call (and photos per scan task).
            cache_dir, mirror: where 'auto' models are cached, and a local mirror to fetch them from.
            threads: the embedding model's intra-op threads (None: the runtime's default).
        """
        from marginface.infer.published import resolve_model

        auto = str(model) == "auto"
        self.model_path = resolve_model("model", cache_dir, mirror) if auto else Path(model)
        if str(detector) == "auto":
            detector = resolve_model("detector", cache_dir, mirror)
        self.detector_path = Path(detector) if detector is not None else None
        self.embedder = load_embedder(self.model_path, spec, input_name, threads)
        self.detector_score = detector_score
        self.detector = YuNetDetector(self.detector_path, score_threshold=detector_score) if detector else None
        self.fingerprint = model_fingerprint(self.model_path, self.embedder)
        self.threshold: Threshold | None = Threshold.resolve("verify", value=threshold, model="auto" if auto else model,
                                                             required=False)
        self.flip = flip
        self.max_side = max_side
        self.batch_size = batch_size
        self._detect_lock = threading.Lock()  # the OpenCV detector keeps per-call input-size state
        self._embed_lock = threading.Lock()  # serialises a shared non-ONNX embedder across scan workers
        self._slots: list[_ScanSlot] = []  # scan workers' detectors and sessions, kept for the next scan
        self._slots_lock = threading.Lock()

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
    def _run_detector(self, rgb: np.ndarray, detector: YuNetDetector | None) -> list[Face]:
        """`detector` (a scan worker's own) on `rgb`, or the shared detector under its lock."""
        if detector is not None:
            return detector.detect(rgb)
        with self._detect_lock:
            return self.detector.detect(rgb)

    def _detect(self, rgb: np.ndarray, detector: YuNetDetector | None = None) -> list[Face]:
        """Faces in original pixels, main face first then by score; large photos detected downscaled (by
        `detector` when a scan worker gives its own, else by the shared one)."""
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
            found = self._run_detector(small, detector)
            faces = [Face(f.box / scale, f.landmarks / scale, f.score) for f in found]
        else:
            faces = self._run_detector(rgb, detector)
        main = pick_main_face(faces, rgb.shape)
        return [main] + [f for f in faces if f is not main] if main is not None else []

    def _align(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        size = self.embedder.input_size
        if self.detector is None:
            return rgb[None]
        return np.stack([align_face(rgb, f.landmarks, size) for f in faces])

    def embed_crops(self, crops: np.ndarray, embedder: Embedder | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(unit embeddings, raw norms) of aligned crops, batch by batch, flip test included (`embedder`: a scan
        worker's own)."""
        embedder = embedder or self.embedder
        raws = [flip_embed(embedder, crops[i:i + self.batch_size], self.flip)
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
        embeddings, norms = self.embed_crops(self._align(rgb, found))
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

    def scan(self, paths: Iterable[str | Path], progress: Progress | None = None, *, workers: int | None = None,
             ) -> Iterator[ScanItem]:
        """(path, faces or the error that image raised) for image files and folders, in input order.

        Photos are embedded in batches of `batch_size` faces. With several workers, each takes `batch_size`
        photos at a time (fewer for short lists, so that every worker gets several) and decodes, detects,
        aligns and embeds them with its own detector and a one-thread embedding session, so the cores overlap
        all three steps; at most 2 x workers tasks are in flight (memory stays bounded however many files),
        results come back in input order, and an image's error is reported for that image while the scan goes
        on. Closing the generator early stops the workers; their detectors and sessions are kept for the next
        scan.

        Args:
            paths: image files, and folders whose image files (recursive, sorted) are scanned.
            progress: called as progress(done, total) after each image's result, from the caller's thread.
            workers: threads that scan at once; None (default) is one per usable CPU core (`scan_workers`),
                1 is the serial path (the shared detector and embedding session). Embeddings agree with the
                serial path's to float tolerance (batches and thread counts differ), faces and order exactly.
        """
        files = image_files(paths)
        wanted = scan_workers(workers)
        # batch_size photos a task, fewer when a short list would give each worker under 4 (a long idle tail)
        per_task = max(1, min(self.batch_size, -(-len(files) // (4 * wanted))))
        workers = min(wanted, -(-len(files) // per_task))  # a worker with no task would only cost a session
        if workers <= 1:
            yield from self._scan_serial(files, progress)
        else:
            yield from self._scan_parallel(files, progress, workers, per_task)

    def _prepare(self, path: Path, detector: YuNetDetector | None = None) -> _Prepared:
        """Decode, detect and align one file; an unreadable image is its error, for that file alone."""
        try:
            rgb = load_image(path)
            found = self._detect(rgb, detector)
            return path, found, self._align(rgb, found) if found else None
        except (ValueError, OSError, cv2.error) as err:  # reported for this file; the scan goes on
            return path, err, None

    def _finish(self, pending: list[_Prepared], embedder: Embedder | None = None) -> list[ScanItem]:
        """The (path, faces or error) of prepared files, their faces embedded together in batches."""
        crops = [c for _, _, c in pending if c is not None]
        embeddings, norms = self.embed_crops(np.concatenate(crops), embedder) if crops else (None, None)
        out: list[ScanItem] = []
        start = 0
        for path, found, crop in pending:
            if crop is None:
                out.append((path, found if isinstance(found, Exception) else []))
                continue
            end = start + len(crop)
            out.append((path, self._results(found, embeddings[start:end], norms[start:end])))
            start = end
        return out

    def _scan_serial(self, files: list[Path], progress: Progress | None) -> Iterator[ScanItem]:
        """One photo after another on the shared detector; embedded once `batch_size` faces or photos wait."""
        pending: list[_Prepared] = []
        done = queued = 0
        for index, path in enumerate(files):
            pending.append(self._prepare(path))
            crops = pending[-1][2]
            queued += 0 if crops is None else len(crops)
            if queued >= self.batch_size or len(pending) >= self.batch_size or index == len(files) - 1:
                for item in self._finish(pending):
                    done += 1
                    if progress is not None:
                        progress(done, len(files))
                    yield item
                pending.clear()
                queued = 0

    def _acquire_slot(self) -> _ScanSlot:
        """A free worker slot (own detector and embedder), made on first need and kept for later scans."""
        with self._slots_lock:
            if self._slots:
                return self._slots.pop()
        detector = (YuNetDetector(self.detector_path, score_threshold=self.detector_score)
                    if self.detector is not None else None)
        return _ScanSlot(detector, worker_embedder(self.embedder, self._embed_lock))

    def _release_slot(self, slot: _ScanSlot) -> None:
        with self._slots_lock:
            self._slots.append(slot)

    def _scan_chunk(self, chunk: list[Path], stop: threading.Event) -> list[ScanItem]:
        """One worker's batch of photos, start to end; abandoned (empty) once the scan is stopped."""
        slot = self._acquire_slot()
        try:
            pending = []
            for path in chunk:
                if stop.is_set():
                    return []
                pending.append(self._prepare(path, slot.detector))
            return self._finish(pending, slot.embedder)
        finally:
            self._release_slot(slot)

    def _scan_parallel(self, files: list[Path], progress: Progress | None, workers: int,
                       per_task: int) -> Iterator[ScanItem]:
        """`workers` threads on tasks of `per_task` photos, 2 x workers tasks in flight, results in order."""
        chunks = (files[i:i + per_task] for i in range(0, len(files), per_task))
        stop = threading.Event()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="marginface-scan")
        in_flight: deque[Future[list[ScanItem]]] = deque()
        log.debug("scanning %d files with %d workers", len(files), workers)
        try:
            for chunk in chunks:
                in_flight.append(pool.submit(self._scan_chunk, chunk, stop))
                if len(in_flight) >= 2 * workers:
                    break
            done = 0
            while in_flight:
                results = in_flight.popleft().result()  # a worker's unexpected error is raised here, in order
                chunk = next(chunks, None)
                if chunk is not None:  # refill before yielding, so workers go on while the caller works
                    in_flight.append(pool.submit(self._scan_chunk, chunk, stop))
                for item in results:
                    done += 1
                    if progress is not None:
                        progress(done, len(files))
                    yield item
        finally:  # finished, failed or closed early: no worker outlives the scan
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)


def _label(image, fallback: str) -> str:
    return str(image) if isinstance(image, (str, Path)) else fallback

