"""Benchmark: clustering photo collections' faces into people (issue 18), every candidate side by side.

Datasets: LFW (every photo's main face, 13,233), LFW's people with >= 10 photos, ORL. Per dataset, on our
MobileFaceNet embeddings: each method of marginface.cluster at the cut calibrated on the *other* dataset
(ORL's all-pairs report for LFW, LFW's for ORL, at `--far`), DBSCAN with Immich's defaults (max cosine
distance 0.5, min 3 faces) and HDBSCAN (min cluster 2); on face_recognition's 128-d dlib encodings, DBSCAN
as its users run it (PyImageSearch's cluster_faces.py: euclidean, eps 0.5, scikit-learn's default
min_samples 5; and the eps 0.4 / min_samples 2 variant seen in its users' code). Photos where a detector
found no face count as unclustered singletons. Metrics: pairwise and BCubed P/R/F, clusters.
Then: incremental (the faces fed in 10 random batches) against batch; scale (LFW plus random unit vectors
to `--scale` faces, then 1,000 held-out LFW faces added incrementally).

    python bench/cluster_embed.py ours lfw   (and: ours orl, peer lfw, peer orl)   # caches in runs/cluster/
    python bench/cluster.py --quick          # ORL and LFW >= 10 only, scale 20,000
    python bench/cluster.py                  # writes bench/results/cluster/cluster.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_embed import cache_path  # noqa: E402

from marginface.cluster import assign_incremental, cluster_embeddings  # noqa: E402
from marginface.cluster.algorithms import DEFAULT_K, Graph, cluster_graph  # noqa: E402
from marginface.cluster.calibrate import cluster_threshold, write_pairs_report  # noqa: E402
from marginface.cluster.graph import HNSW_GRAPH_EF, knn_graph  # noqa: E402
from marginface.cluster.incremental import existing_index  # noqa: E402
from marginface.cluster.metrics import bcubed_prf, cluster_count, pairwise_prf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "cluster"
log = logging.getLogger("bench.cluster")

OURS_METHODS = ("average", "average_known", "chinese_whispers", "connected")
IMMICH = {"method": "dbscan", "threshold": 0.5, "min_size": 3}  # maxDistance 0.5, minFaces 3
PEER_DBSCAN = ({"eps": 0.5, "min_samples": 5, "source": "PyImageSearch cluster_faces.py: DBSCAN(metric='euclidean')"},
               {"eps": 0.4, "min_samples": 2, "source": "users' variant: eps 0.4, min_samples 2"})


def load(kind: str, name: str) -> dict:
    """A cache of bench/cluster_embed.py as arrays."""
    path = cache_path(kind, name)
    z = np.load(path)
    out = {key: z[key] for key in z.files}
    out["path"] = str(path.relative_to(REPO))
    if "done" not in out:
        out["done"] = np.ones(len(out["labels"]), bool)
    return out


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Pairwise and BCubed P/R/F and cluster counts of one labelling."""
    return {"pairwise": pairwise_prf(truth, predicted).to_dict(), "bcubed": bcubed_prf(truth, predicted).to_dict(),
            "clusters": cluster_count(predicted), "clusters_2plus": cluster_count(predicted, 2),
            "unclustered": int((predicted < 0).sum())}


def spread(found: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels of the faces found placed back among all photos (-1 = no face: a singleton)."""
    out = np.full(len(found), -1, np.int64)
    out[found] = labels
    return out


def line(dataset: str, name: str, result: dict) -> None:
    """One printed row."""
    b, p = result["bcubed"], result["pairwise"]
    print(f"{dataset:9s} {name:34s} BCubed P {b['precision']:.4f} R {b['recall']:.4f} F {b['f']:.4f} | pairwise "
          f"P {p['precision']:.4f} R {p['recall']:.4f} F {p['f']:.4f} | {result['clusters']:6d} clusters "
          f"({result['seconds']:.1f} s)", flush=True)


def run_dataset(dataset: str, ours: dict, peer: dict | None, cut: dict, k: int) -> dict:
    """Every method on one dataset: ours at the calibrated cut, the baselines, the peer."""
    truth, found = ours["labels"], ours["found"]
    x = ours["embeddings"][found]
    results: dict = {"faces": int(len(truth)), "identities": int(len(np.unique(truth))),
                     "faces_found": int(found.sum()), "methods": {}}
    start = time.perf_counter()
    neighbours, sims = knn_graph(x, k, index="exact")
    graph = Graph.from_knn(neighbours, sims)
    results["graph_seconds"] = time.perf_counter() - start
    runs = [(f"ours {m} @ calibrated cut", {"method": m, "threshold": cut["value"], "min_size": 1})
            for m in OURS_METHODS]
    runs += [("ours dbscan, Immich defaults", IMMICH),
             ("ours hdbscan, min cluster 2", {"method": "hdbscan", "threshold": cut["value"], "min_size": 2}),
             ("ours average @ 0.5 (Immich's cut)", {"method": "average", "threshold": 0.5, "min_size": 1})]
    for name, settings in runs:
        start = time.perf_counter()
        labels = cluster_graph(graph, **settings)
        result = {**settings, **scores(truth, spread(found, labels)), "seconds": time.perf_counter() - start}
        results["methods"][name] = result
        line(dataset, name, result)
    if peer is not None and peer["done"].all():
        from sklearn.cluster import DBSCAN

        pfound = peer["found"]
        results["peer_faces_found"] = int(pfound.sum())
        for settings in PEER_DBSCAN:
            start = time.perf_counter()
            labels = DBSCAN(eps=settings["eps"], min_samples=settings["min_samples"], metric="euclidean").fit_predict(
                peer["embeddings"][pfound])
            name = f"face_recognition dbscan eps {settings['eps']} min {settings['min_samples']}"
            result = {**settings, **scores(truth, spread(pfound, labels)), "seconds": time.perf_counter() - start}
            results["methods"][name] = result
            line(dataset, name, result)
    elif peer is not None:
        results["peer_note"] = f"face_recognition cache incomplete ({int(peer['done'].sum())} of {len(truth)} photos)"
    return results


def subset(data: dict, keep: np.ndarray) -> dict:
    """The cache restricted to photos `keep`."""
    return {key: (value[keep] if isinstance(value, np.ndarray) and len(value) == len(keep) else value)
            for key, value in data.items()}


def calibration(name: str, data: dict, far: float) -> dict:
    """The all-pairs report of one dataset (written under OUT) and its cut at `far`."""
    path = OUT / f"calibration_{name}.json"
    write_pairs_report(path, data["embeddings"][data["found"]], data["labels"][data["found"]], name)
    threshold = cluster_threshold(path, far=far)
    relative = str(path.relative_to(REPO))  # the JSON names the report as the repository does, wherever it is
    return {"report": relative, "far": far, "value": threshold.value,
            "source": threshold.source.replace(str(path), relative)}


def run_incremental(ours: dict, cut: float, k: int, batches: int, seed: int) -> dict:
    """LFW faces in `batches` random batches: the first clustered, each next assigned incrementally."""
    truth, found = ours["labels"], ours["found"]
    x = ours["embeddings"][found]
    order = np.random.default_rng(seed).permutation(len(x))
    parts = np.array_split(order, batches)
    start = time.perf_counter()
    batch = cluster_embeddings(x, method="average", threshold=cut, k=k, index="exact")
    batch_s = time.perf_counter() - start
    labels = np.full(len(x), -1, np.int64)
    seen = parts[0]
    start = time.perf_counter()
    labels[seen] = cluster_embeddings(x[seen], method="average", threshold=cut, k=k, index="exact")
    steps = []
    for part in parts[1:]:
        t0 = time.perf_counter()
        labels[part] = assign_incremental(x[seen], labels[seen], x[part], threshold=cut, method="average", k=k)
        steps.append(time.perf_counter() - t0)
        seen = np.concatenate([seen, part])
    inc_s = time.perf_counter() - start
    b, i = scores(truth, spread(found, batch)), scores(truth, spread(found, labels))
    agree = bcubed_prf(batch, labels).to_dict()
    print(f"incremental ({batches} batches): BCubed F {i['bcubed']['f']:.4f} pairwise F {i['pairwise']['f']:.4f}; "
          f"batch BCubed F {b['bcubed']['f']:.4f} pairwise F {b['pairwise']['f']:.4f}; difference "
          f"{b['bcubed']['f'] - i['bcubed']['f']:+.4f}; incremental vs batch BCubed F {agree['f']:.4f}", flush=True)
    return {"batches": batches, "seed": seed, "batch": {**b, "seconds": batch_s},
            "incremental": {**i, "seconds": inc_s, "step_seconds": steps},
            "bcubed_f_difference": b["bcubed"]["f"] - i["bcubed"]["f"], "incremental_vs_batch_bcubed": agree}


def rss_peak_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_scale(ours: dict, cut: float, k: int, total: int, new: int, seed: int) -> dict:
    """LFW minus `new` held-out faces plus random unit vectors to `total` faces: batch clustering time (index
    build + kNN graph + average linkage), then the held-out faces added incrementally through the same index."""
    truth, found = ours["labels"][ours["found"]], ours["found"]
    x = ours["embeddings"][found]
    rng = np.random.default_rng(seed)
    held = rng.choice(len(x), size=new, replace=False)
    base = np.setdiff1d(np.arange(len(x)), held)
    filler = rng.standard_normal((total - len(base), x.shape[1])).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    vectors = np.concatenate([x[base], filler])
    del filler
    rss_before = rss_peak_mib()
    start = time.perf_counter()
    searcher = existing_index(vectors)  # one index: it builds the graph, then serves the incremental queries
    index_s = time.perf_counter() - start
    if searcher.kind == "hnsw":
        searcher.ef_search = HNSW_GRAPH_EF
    neighbours, sims = knn_graph(vectors, k, searcher=searcher)
    graph_s = time.perf_counter() - start
    labels = cluster_graph(Graph.from_knn(neighbours, sims), method="average", threshold=cut)
    batch_s = time.perf_counter() - start
    del neighbours, sims
    if searcher.kind == "hnsw":
        searcher.ef_search = 256  # the gallery's setting for top-k of new faces
    start = time.perf_counter()
    added = assign_incremental(vectors, labels, x[held], threshold=cut, method="average", k=k, searcher=searcher)
    add_s = time.perf_counter() - start
    real = np.concatenate([labels[: len(base)], added])
    real_truth = np.concatenate([truth[base], truth[held]])
    result = {"faces": total, "real_faces": int(len(x)), "distractors": int(total - len(base)), "new_faces": new,
              "index": searcher.kind, "index_build_seconds": index_s,
              "knn_graph_seconds_with_index_build": graph_s, "batch_seconds": batch_s, "incremental_seconds": add_s,
              "peak_rss_mib": rss_peak_mib(), "peak_rss_before_mib": rss_before,
              "distractors_in_clusters_of_2plus": int(np.isin(labels[len(base):], np.flatnonzero(
                  np.bincount(labels[labels >= 0]) >= 2)).sum()),
              "lfw_after_adding": scores(real_truth, real), "load_average": os.getloadavg()}
    print(f"scale: {total:,} faces clustered in {batch_s:.1f} s (index + kNN graph {graph_s:.1f} s), peak RSS "
          f"{result['peak_rss_mib']:.0f} MiB; {new} new faces added in {add_s:.2f} s (same index, built in "
          f"{index_s:.1f} s); "
          f"load {result['load_average'][0]:.1f} (provisional: shared machine)", flush=True)
    return result


def table(path: Path) -> str:
    """The markdown table of a results JSON (what docs/clustering.md and bench/README.md show)."""
    results = json.loads(path.read_text())
    rows = ["| set | method | cut | BCubed P / R / F | pairwise P / R / F | clusters (≥ 2 faces) |",
            "|---|---|---:|---:|---:|---:|"]
    for name, data in results["datasets"].items():
        for method, r in data["methods"].items():
            cut = r.get("threshold", "")
            cut = f"{cut:.4f}" if isinstance(cut, float) else (f"eps {r['eps']}" if "eps" in r else str(cut))
            if method.startswith("ours hdbscan"):
                cut = "—"
            b, p = r["bcubed"], r["pairwise"]
            rows.append(f"| {name} | {method} | {cut} | {b['precision']:.3f} / {b['recall']:.3f} / **{b['f']:.3f}** | "
                        f"{p['precision']:.3f} / {p['recall']:.3f} / **{p['f']:.3f}** | {r['clusters']:,} "
                        f"({r['clusters_2plus']:,}) |")
    return "\n".join(rows)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ORL and LFW >= 10 only, scale 20,000")
    parser.add_argument("--far", type=float, default=1e-4, help="FAR of the calibration report the cut is read at")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--parts", default="quality,incremental,scale")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--table", type=Path, help="print the markdown table of a results JSON and exit")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    parts = set(args.parts.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    lfw, orl = load("ours", "lfw"), load("ours", "orl")
    peers = {}
    for name in ("lfw", "orl"):
        try:
            peers[name] = load("peer", name)
        except FileNotFoundError:
            peers[name] = None
    cuts = {"lfw": calibration("orl", orl, args.far), "orl": calibration("lfw", lfw, args.far)}
    cuts["lfw10"] = cuts["lfw"]
    results: dict = {"k": args.k, "far": args.far, "cuts": cuts, "caches": {"ours_lfw": lfw["path"],
                     "ours_orl": orl["path"]}, "load_average_start": os.getloadavg(), "datasets": {}}
    print(f"cuts: LFW from {cuts['lfw']['source']} = {cuts['lfw']['value']:.4f}; ORL from "
          f"{cuts['orl']['source']} = {cuts['orl']['value']:.4f}", flush=True)
    many = np.bincount(lfw["labels"])[lfw["labels"]] >= 10
    if "quality" in parts:
        sets = [("orl", orl, peers["orl"]), ("lfw10", subset(lfw, many),
                                             subset(peers["lfw"], many) if peers["lfw"] is not None else None)]
        if not args.quick:
            sets.append(("lfw", lfw, peers["lfw"]))
        peer = peers["lfw"]
        if peer is not None and not peer["done"].all():  # side by side on the photos the peer has embedded
            done = peer["done"].copy()
            sets.append(("lfw_peer_done", subset(lfw, done), subset(peer, done)))
            cuts["lfw_peer_done"] = cuts["lfw"]
        for name, data, peer in sets:
            results["datasets"][name] = run_dataset(name, data, peer, cuts[name], args.k)
            results["datasets"][name]["cut"] = cuts[name]
    if "incremental" in parts:
        data = subset(lfw, many) if args.quick else lfw
        results["incremental"] = run_incremental(data, cuts["lfw"]["value"], args.k, 10, 0)
    if "scale" in parts:
        results["scale"] = run_scale(lfw, cuts["lfw"]["value"], args.k, 20_000 if args.quick else args.scale,
                                     1000, 0)
    results["load_average_end"] = os.getloadavg()
    out = args.out or OUT / ("cluster_quick.json" if args.quick else "cluster.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
