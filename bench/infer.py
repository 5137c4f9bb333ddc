"""Benchmark: the deploy path (FaceRecognizer, gallery search, HTTP service) beside its floor, same run.

1. pipeline: LFW photos/s through FaceRecognizer (decode + detect + align + embed, flip test) beside the
   floor: the same YuNet and MobileFaceNet called directly on ready inputs (pre-decoded BGR arrays at the
   detector's input size, then one batch of pre-aligned faces and their mirror images). overhead = ours /
   floor − 1. scan runs serially here (workers=1); bench/scan.py measures its workers against one core.
2. search: galleries of 10⁴, 10⁵, 10⁶ templates (real LFW MobileFaceNet templates plus random unit
   vectors): single-query p50/p99 latency, index memory and build time for exact search (ExactIndex, the
   gallery's own exact path search.TemplateIndex, and IdentityIndex over ExactIndex) and FAISS HNSW /
   IVF-Flat; recall@1 of FAISS against exact on real LFW probes and on random unit queries.
3. service: `marginface serve`'s app (uvicorn, loopback, separate process) under 1 / 4 / 8 concurrent
   clients POSTing LFW photos to /v1/identify: requests/s, p50/p95, errors, server RSS before and after;
   HTTP overhead at concurrency 1 against the same identify calls made directly on the library.

    python bench/infer.py --quick                 # a small smoke run (~1 min)
    python bench/infer.py                         # the full run; writes bench/results/infer/infer.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from marginface.data.align import align_face
from marginface.data.folder import scan_identity_folder
from marginface.data.image import decode_image
from marginface.infer.detect import YuNetDetector, pick_main_face
from marginface.infer.embedder import OnnxEmbedder, flip_embed
from marginface.infer.index import IdentityIndex, build_index
from marginface.infer.published import published_threshold
from marginface.infer.search import TemplateIndex

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.infer")


def data_dir() -> Path:
    """../shared/data or $MARGINFACE_DATA."""
    return Path(os.environ.get("MARGINFACE_DATA", REPO.parent / "shared" / "data")).resolve()


def model_paths(data: Path) -> tuple[Path, Path]:
    """(MobileFaceNet ONNX, YuNet ONNX) in the shared data folder."""
    return (data / "face_recognition_mobilefacenet" / "mobilefacenet_dynamic_batch.onnx",
            data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx")


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def percentiles(values_s: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean in milliseconds."""
    ms = np.asarray(values_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def lfw_photos(data: Path, count: int) -> list[Path]:
    """`count` LFW photos spread over identities (every k-th file of the sorted list)."""
    _, items = scan_identity_folder(data / "lfw" / "lfw-deepfunneled")
    step = max(1, len(items) // count)
    return [path for path, _ in items[::step][:count]]


# ---------------------------------------------------------------------------------------------- 1. pipeline

class Floor:
    """The same YuNet and MobileFaceNet on ready inputs: BGR arrays at the detector's input size, then one batch
    of the aligned faces YuNet found and their mirror images (the flip test), 64 at a time."""

    def __init__(self, photos: list[bytes], embedder: OnnxEmbedder, yunet_path: Path) -> None:
        rgbs = [decode_image(data) for data in photos]
        self.bgrs = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) for rgb in rgbs]
        helper = YuNetDetector(yunet_path)
        faces = np.stack([align_face(rgb, face.landmarks) for rgb in rgbs for face in helper.detect(rgb)])
        self.faces = len(faces)
        self.batch = np.concatenate([faces, np.ascontiguousarray(faces[:, :, ::-1])])
        self.embedder = embedder
        self.detector = cv2.FaceDetectorYN.create(str(yunet_path), "", (320, 320), 0.6, 0.3, 50)

    def detect(self) -> None:
        """YuNet on every photo."""
        for bgr in self.bgrs:
            self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            self.detector.detect(bgr)

    def embed(self) -> None:
        """MobileFaceNet on every face and its mirror image."""
        for start in range(0, len(self.batch), 64):
            self.embedder.embed(self.batch[start:start + 64])


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_pipeline(data: Path, count: int, repeats: int) -> dict:
    """Photos/s through FaceRecognizer (faces() per photo, and scan() over the files) against the floor;
    the four measurements are interleaved, `repeats` rounds, medians reported."""
    from marginface.infer.recognizer import FaceRecognizer

    model, yunet = model_paths(data)
    paths = lfw_photos(data, count)
    photos = [p.read_bytes() for p in paths]  # faces() gets bytes: decoding is measured, disk reads are not
    recognizer = FaceRecognizer(model, yunet)
    floor = Floor(photos, OnnxEmbedder(model), yunet)
    counts: dict[str, int] = {}

    def faces() -> None:
        counts["faces"] = sum(len(recognizer.faces(photo)) for photo in photos)

    def scan() -> None:
        scanned = recognizer.scan(paths, workers=1)  # the serial path against the floor; workers: bench/scan.py
        counts["scan"] = sum(len(found) for _, found in scanned if not isinstance(found, Exception))

    runs: dict[str, list[float]] = {"faces": [], "scan": [], "detect": [], "embed": []}
    steps = {"faces": faces, "scan": scan, "detect": floor.detect, "embed": floor.embed}
    for step in steps.values():
        step()  # warm-up (and the face counts)
    for _ in range(repeats):
        for name, step in steps.items():
            runs[name].append(_timed(step))
    t = {name: statistics.median(values) for name, values in runs.items()}
    t_floor = t["detect"] + t["embed"]
    result = {
        "photos": len(photos), "faces_found": {"faces": counts["faces"], "scan": counts["scan"],
                                               "floor": floor.faces},
        "repeats": repeats, "median_s": t, "floor_s": t_floor,
        "photos_per_s": {"faces": len(photos) / t["faces"], "scan": len(photos) / t["scan"],
                         "floor": len(photos) / t_floor},
        "overhead": {"faces": t["faces"] / t_floor - 1, "scan": t["scan"] / t_floor - 1},
    }
    pps, over = result["photos_per_s"], result["overhead"]
    print(f"pipeline, {len(photos)} LFW photos ({floor.faces} faces): floor {pps['floor']:6.1f} photos/s "
          f"(detect {t['detect']:.2f} s + embed {t['embed']:.2f} s); FaceRecognizer.scan {pps['scan']:6.1f} "
          f"photos/s ({100 * over['scan']:+.1f} %); FaceRecognizer.faces {pps['faces']:6.1f} photos/s "
          f"({100 * over['faces']:+.1f} %)")
    return result


# ------------------------------------------------------------------------------------------------ 2. search

def real_embeddings(data: Path, identities: int, probes_per_identity: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery templates, probe embeddings) of LFW identities with >= 10 images, unit float32, flip test."""
    model, yunet = model_paths(data)
    names, items = scan_identity_folder(data / "lfw" / "lfw-deepfunneled")
    labels = np.array([label for _, label in items])
    counts = np.bincount(labels)
    chosen = np.flatnonzero(counts >= 10)[:identities]
    detector, embedder = YuNetDetector(yunet), OnnxEmbedder(model)
    gallery_paths, probe_paths = [], []
    for label in chosen:
        files = [path for path, lab in items if lab == label]
        gallery_paths.append(files[0])
        probe_paths.extend(files[1:1 + probes_per_identity])

    def embed(paths: list[Path]) -> np.ndarray:
        faces = []
        for path in paths:
            rgb = decode_image(path.read_bytes(), str(path))
            face = pick_main_face(detector.detect(rgb), rgb.shape)
            if face is None:
                raise RuntimeError(f"{path}: no face found by YuNet")
            faces.append(align_face(rgb, face.landmarks))
        out = np.concatenate([flip_embed(embedder, np.stack(faces[i:i + 64])) for i in range(0, len(faces), 64)])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    return embed(gallery_paths), embed(probe_paths)


def _latencies(search, queries: np.ndarray) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Per-query latency (one query at a time), top-1 ids and their scores, after the thread pools of whatever
    ran before (onnxruntime, FAISS's OpenMP) have stopped spinning: right after them a BLAS call on 2 cores is
    100x slower."""
    time.sleep(1.0)
    for query in queries[:5]:
        search(query[None])
    times, top = [], []
    for query in queries:
        start = time.perf_counter()
        found = search(query[None])
        times.append(time.perf_counter() - start)
        top.append(found)
    return times, np.array([t[0] for t in top], np.int64), np.array([t[1] for t in top], np.float64)


def _index_bytes(index) -> int:
    """Memory the index holds: the matrix for exact, FAISS's serialised size for FAISS indexes."""
    if index.kind == "exact":
        return int(index._vectors.nbytes + index._ids.nbytes)
    import faiss

    return int(faiss.serialize_index(index._index).nbytes + index._ids.nbytes)


def gallery_exact_search(vectors: np.ndarray):
    """The gallery's own exact search (search.TemplateIndex: float32 candidates, float64 rescoring), one
    template per identity."""
    index = TemplateIndex(vectors.shape[1])
    ids = np.arange(len(vectors), dtype=np.int64)
    index.add(ids, ids, vectors)
    return lambda q: (lambda hit: (hit.identity, hit.score))(index.search(q, 1)[0][0])


def identity_exact_search(vectors: np.ndarray):
    """index.IdentityIndex('exact'): the gallery-compatible identity search over ExactIndex, candidates rescored
    with the gallery's float64 scores."""
    index = IdentityIndex("exact", vectors.shape[1])
    ids = np.arange(len(vectors), dtype=np.int64)
    index.add(ids, ids, vectors)
    return lambda q: (lambda hit: (hit.identity, hit.score))(index.search(q, 1)[0][0])


def _top1(index):
    """search(q) -> (top-1 template id, score) of a VectorIndex."""
    def search(q: np.ndarray) -> tuple[int, float]:
        ids, scores = index.search(q, 1)
        return int(ids[0, 0]), float(scores[0, 0])
    return search


def _agreement(ids: np.ndarray, scores: np.ndarray, exact_ids: np.ndarray, exact_scores: np.ndarray,
               threshold: float) -> dict:
    """How often an approximate top-1 leads to the exact search's decision at the operating threshold."""
    decide = np.where(scores >= threshold, ids, -1)
    exact_decide = np.where(exact_scores >= threshold, exact_ids, -1)
    above = exact_scores >= threshold
    return {"decision_agreement": float(np.mean(decide == exact_decide)),
            "recall_at_1_above_threshold": float(np.mean(ids[above] == exact_ids[above])) if above.any() else None,
            "queries_above_threshold": int(above.sum())}


def bench_search(data: Path, sizes: list[int], identities: int, probes_per_identity: int, queries: int,
                 kinds: list[str], hnsw_efs: list[int] | None = None) -> dict:
    """Latency, memory and recall@1 of each index kind at each gallery size (HNSW at each efSearch given)."""
    gallery, probes = real_embeddings(data, identities, probes_per_identity)
    rng = np.random.default_rng(0)
    dim = gallery.shape[1]
    real_q = probes[:queries]
    random_q = rng.standard_normal((max(1, queries // 2), dim)).astype(np.float32)
    random_q /= np.linalg.norm(random_q, axis=1, keepdims=True)
    threshold = published_threshold("identify").value
    results: dict = {"dim": dim, "real_templates": len(gallery), "real_queries": len(real_q),
                     "random_queries": len(random_q), "decision_threshold": threshold, "sizes": {}}
    for size in sizes:
        filler = rng.standard_normal((size - len(gallery), dim)).astype(np.float32)
        filler /= np.linalg.norm(filler, axis=1, keepdims=True)
        vectors = np.concatenate([gallery, filler])
        del filler
        row: dict = {}
        exact_top: dict[str, np.ndarray] = {}
        for kind in kinds:
            start = time.perf_counter()
            index = build_index(kind, vectors)
            build_s = time.perf_counter() - start
            settings = [(f"hnsw_ef{ef}" if len(hnsw_efs) > 1 else kind, ef) for ef in hnsw_efs] \
                if kind == "hnsw" and hnsw_efs else [(kind, None)]
            for label, ef in settings:
                if ef is not None:
                    index.ef_search = ef
                times, top_real, score_real = _latencies(_top1(index), real_q)
                _, top_random, _ = _latencies(_top1(index), random_q)
                entry = {"build_s": build_s, "index_mib": _index_bytes(index) / 2**20, "rss_mib": rss_mib(),
                         **percentiles(times)}
                if kind == "exact":
                    exact_top = {"real": top_real, "random": top_random, "real_scores": score_real}
                    entry["true_match_at_1_real"] = float(np.mean(top_real[: len(real_q)] == np.repeat(
                        np.arange(len(gallery)), probes_per_identity)[: len(real_q)]))
                else:
                    entry["recall_at_1_real"] = float(np.mean(top_real == exact_top["real"]))
                    entry["recall_at_1_random"] = float(np.mean(top_random == exact_top["random"]))
                    entry.update(_agreement(top_real, score_real, exact_top["real"], exact_top["real_scores"],
                                            threshold))
                row[label] = entry
                recall = (f", recall@1 {entry['recall_at_1_real']:.4f} real / {entry['recall_at_1_random']:.4f} "
                          f"random, decisions at {threshold:.4f} agree {entry['decision_agreement']:.4f}"
                          if kind != "exact" else "")
                print(f"search N={size:>9,}: {label:5s} p50 {entry['p50_ms']:7.2f} ms, p99 {entry['p99_ms']:7.2f} "
                      f"ms, {entry['index_mib']:7.1f} MiB, build {build_s:6.1f} s{recall}", flush=True)
            del index
        few = min(len(real_q), 100)  # the gallery's exact path copies its matrix per query: slow at 10^6
        for label, search in (("gallery_exact", gallery_exact_search(vectors)),
                              ("identity_index_exact", identity_exact_search(vectors))):
            times, top, _ = _latencies(search, real_q[:few])
            row[label] = {**percentiles(times), "queries": few,
                          "same_top1_as_exact": float(np.mean(top == exact_top["real"][:few]))}
            print(f"search N={size:>9,}: {label} p50 {row[label]['p50_ms']:7.2f} ms, "
                  f"p99 {row[label]['p99_ms']:7.2f} ms", flush=True)
            del search
        for label in [label for label in row if label.startswith(("hnsw", "ivf"))]:
            row[label]["speedup_p50_vs_exact"] = row["exact"]["p50_ms"] / row[label]["p50_ms"]
        results["sizes"][str(size)] = row
        del vectors
    return results


# ----------------------------------------------------------------------------------------------- 3. service

def _make_gallery(data: Path, folder: Path, people: int) -> tuple[Path, list[bytes]]:
    """A gallery of `people` LFW identities (first photo each, library calls) and other photos of them to
    identify; the threshold is fixed since only the time is measured here."""
    from marginface.infer.gallery import Gallery
    from marginface.infer.recognizer import FaceRecognizer
    from marginface.infer.thresholds import Threshold

    model, yunet = model_paths(data)
    recognizer = FaceRecognizer(model, yunet, threshold=Threshold.fixed(0.35))
    root = data / "lfw" / "lfw-deepfunneled"
    names = sorted(p.name for p in root.iterdir() if len(list(p.iterdir())) >= 4)[:people]
    path = folder / "people.db"
    queries = []
    with Gallery.create(path, recognizer.fingerprint, recognizer.threshold, model=model, detector=yunet) as gallery:
        for name in names:
            photos = sorted((root / name).iterdir())
            gallery.enroll(name, [(recognizer.main_face(photos[0]), None)], recognizer.fingerprint)
            queries += [p.read_bytes() for p in photos[1:4]]
    return path, queries


def _start_server(gallery: Path, port: int) -> tuple[object, str]:
    """`marginface serve` in its own process on 127.0.0.1:port; waits for /healthz."""
    import subprocess

    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen([sys.executable, "-m", "marginface", "serve", str(gallery), "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"marginface serve exited with status {process.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("marginface serve did not answer /healthz within 120 s")


def _load(url: str, photos: list[bytes], requests: int, concurrency: int) -> dict:
    """`requests` POST /v1/identify from `concurrency` client threads (each its own connection)."""
    import threading

    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    response = http.post("/v1/identify", files={"image": (f"{i}.jpg", photos[i % len(photos)])})
                    ok = response.status_code == 200 and bool(response.json()["faces"])
                    problem = None if ok else f"status {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as err:
                    problem = f"{type(err).__name__}: {err}"
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": requests, "errors": len(errors), "error_examples": errors[:3],
            "requests_per_s": requests / wall, **percentiles(latencies)}


def bench_service(data: Path, quick: bool) -> dict:
    """Loopback load on `marginface serve` and the HTTP overhead over direct library calls (see docstring)."""
    import socket
    import tempfile

    import httpx

    from marginface.infer.gallery import Gallery
    from marginface.infer.recognizer import FaceRecognizer

    per_level = 24 if quick else 100
    with tempfile.TemporaryDirectory() as tmp:
        gallery_path, photos = _make_gallery(data, Path(tmp), 10 if quick else 40)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process, url = _start_server(gallery_path, port)
        try:
            _load(url, photos, 8, 1)  # warm-up
            rss = {"start": rss_mib(process.pid)}
            levels = []
            for concurrency in (1, 4, 8):
                levels.append(_load(url, photos, per_level, concurrency))
                rss[f"after_c{concurrency}"] = rss_mib(process.pid)
                print(f"service c={concurrency}: {levels[-1]['requests_per_s']:5.1f} req/s, p50 "
                      f"{levels[-1]['p50_ms']:6.1f} ms, p95 {levels[-1]['p95_ms']:6.1f} ms, errors "
                      f"{levels[-1]['errors']}, server RSS {rss[f'after_c{concurrency}']:.0f} MiB", flush=True)
            # HTTP vs direct at concurrency 1: alternate rounds of the same photos to share the machine's noise
            with Gallery.open(gallery_path) as gallery, httpx.Client(base_url=url, timeout=120) as http_client:
                recognizer = FaceRecognizer.from_gallery(gallery)
                recognizer.identify(photos[0], gallery)
                direct_times, http_times = [], []
                for start in range(0, len(photos), 10):  # alternate blocks of 10 photos, direct then HTTP
                    block = photos[start:start + 10]
                    for photo in block:
                        direct_times.append(_timed(lambda photo=photo: recognizer.identify(photo, gallery)))
                    for photo in block:
                        http_times.append(_timed(lambda photo=photo: http_client.post(
                            "/v1/identify", files={"image": ("photo.jpg", photo)}).raise_for_status()))
        finally:
            process.terminate()
            process.wait(timeout=30)
    direct, http = percentiles(direct_times), percentiles(http_times)
    result = {"levels": levels, "rss_mib": rss, "rss_growth_mib": max(rss.values()) - rss["start"],
              "direct_library": direct, "http_c1": http, "http_overhead": http["mean_ms"] / direct["mean_ms"] - 1,
              "gallery_identities": len(photos) // 3, "distinct_photos": len(photos)}
    print(f"service: HTTP at c=1 {http['mean_ms']:.1f} ms vs direct identify {direct['mean_ms']:.1f} ms per photo: "
          f"overhead {100 * result['http_overhead']:+.1f} %; server RSS {rss['start']:.0f} -> "
          f"{max(rss.values()):.0f} MiB")
    return result


# ----------------------------------------------------------------------------------------------- main

def write_results(out: dict, path: Path) -> None:
    """Stamp the load average at the end into `out`, write it to `path` as JSON and say so."""
    out["load_average_at_end"] = list(os.getloadavg())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke run: few photos, 10^4 templates only")
    parser.add_argument("--parts", default="pipeline,search,service",
                        help="comma-separated subset of pipeline,search,service")
    parser.add_argument("--sizes", help="comma-separated gallery sizes for the search part (default 1e4,1e5,1e6)")
    parser.add_argument("--hnsw-ef", help="comma-separated efSearch values to measure on one HNSW build")
    parser.add_argument("--kinds", default="exact,hnsw,ivf", help="index kinds for the search part (exact first)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "infer" / "infer.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = data_dir()
    if not (data / "lfw").is_dir():
        print(f"bench/infer.py: LFW not found under {data} (set MARGINFACE_DATA)", file=sys.stderr)
        return 2
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    out: dict = {"quick": args.quick, "cpu_count": os.cpu_count(),
                 "load_average_at_start": list(os.getloadavg())}
    if "pipeline" in parts:
        out["pipeline"] = bench_pipeline(data, 40 if args.quick else 200, 2 if args.quick else 3)
    if "search" in parts:
        sizes = [10_000] if args.quick else [10_000, 100_000, 1_000_000]
        if args.sizes:
            sizes = [int(float(size)) for size in args.sizes.split(",")]
        out["search"] = bench_search(data, sizes, identities=20 if args.quick else 158,
                                     probes_per_identity=5, queries=100 if args.quick else 300,
                                     kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
                                     hnsw_efs=[int(v) for v in args.hnsw_ef.split(",")] if args.hnsw_ef else None)
    if "service" in parts:
        out["service"] = bench_service(data, quick=args.quick)
    write_results(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
