"""Benchmark: how long People's operations take (issue 18) on a gallery of 10^4-10^5 face records.

The gallery is built with `People.add_faces` (200 faces per photo) and `People.apply_clustering` (clusters of
`--cluster-size` faces, `--unassigned` of them left in no person). Its embeddings are random unit vectors: this
measures latency only (no recognition quality), and an operation's cost depends on the rows it touches, not on
what the vectors hold. Each operation is timed `--repeats` times, each time on people no earlier repetition
touched, and reported as the median:

    name             name a cluster (its faces become the user's, and templates in the search index)
    merge            merge two clusters
    split            move `--move` faces of a cluster into a new cluster
    not_this_person  mark `--move` faces of a cluster 'not' it (taken out)
    remove           delete a cluster with its faces
    people           list every person with counts (what GET /v1/people and `people list` show); its floor
                     is one GROUP BY of the faces per person (counts only: no sample face, names or times)
    unassigned_page  one page of 100 unassigned faces with its counts (GET /v1/faces/unassigned)

The floor of each is the bare SQL of the rows that operation must change (or read), in one committed
transaction, on a copy of the same file through a plain sqlite3 connection with the gallery's PRAGMAs
(WAL, synchronous=FULL): no checks, no checksums, no cannot-links, no search index. "x floor" is ours over
it, measured interleaved in the same run.

    python bench/people_ops.py                      # 100,000 faces -> bench/results/people/people_ops.json
    python bench/people_ops.py --faces 5000 --repeats 3 --out /tmp/people_ops.json    # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from marginface.infer.faces import FaceResult, ModelFingerprint  # noqa: E402
from marginface.infer.gallery import Gallery  # noqa: E402
from marginface.infer.people import People, Person  # noqa: E402
from marginface.infer.thresholds import Threshold  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "people"
PER_PHOTO = 200  # faces per add_faces transaction while building
PAGE = 100  # faces per unassigned page (the route's default)
LANDMARKS = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
OPERATIONS = ("name", "merge", "split", "not_this_person", "remove", "people", "unassigned_page")


def build(path: Path, faces: int, dim: int, cluster_size: int, unassigned: float, seed: int) -> dict:
    """A gallery of `faces` random unit vectors in clusters of `cluster_size`, the last `unassigned` share in no
    person; returns build times and the cluster ids with their face ids."""
    fingerprint = ModelFingerprint("b" * 64, 112, "NCHW", "RGB", 127.5, 127.5, dim)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    with Gallery.create(path, fingerprint, Threshold.fixed(0.5), model=path.with_suffix(".onnx"),
                        detector=None) as gallery:
        people = People(gallery)
        ids: list[int] = []
        for photo in range(-(-faces // PER_PHOTO)):
            vectors = rng.standard_normal((min(PER_PHOTO, faces - len(ids)), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            found = [FaceResult((0.0, 0.0, 100.0, 100.0), LANDMARKS, 0.9, v, 20.0, 100.0) for v in vectors]
            ids += people.add_faces(f"/bench/{photo}.jpg", f"{photo:064x}", found, fingerprint=fingerprint)
        added_s = time.perf_counter() - start
        placed = int(round(len(ids) * (1.0 - unassigned)))
        labels = np.where(np.arange(len(ids)) < placed, np.arange(len(ids)) // cluster_size, -1)
        start = time.perf_counter()
        people.apply_clustering(ids, labels)
        clustered_s = time.perf_counter() - start
        with people.reading() as db:
            members: dict[int, list[int]] = {}
            for cluster, face in db.execute("SELECT cluster_id, id FROM faces WHERE cluster_id IS NOT NULL "
                                            "ORDER BY cluster_id, id"):
                members.setdefault(int(cluster), []).append(int(face))
        counts = people.counts()
    return {"add_faces_seconds": added_s, "apply_clustering_seconds": clustered_s, "members": members,
            "counts": counts, "file_mib": path.stat().st_size / 2**20}


def floor_connection(path: Path) -> sqlite3.Connection:
    """A plain connection with the gallery's PRAGMAs (autocommit; each floor writes its own transaction)."""
    db = sqlite3.connect(str(path), isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
        db.execute(f"PRAGMA {pragma}")
    return db


def write(db: sqlite3.Connection, statements: list[tuple[str, tuple]]) -> None:
    """One committed write transaction of these statements."""
    db.execute("BEGIN IMMEDIATE")
    for sql, args in statements:
        db.execute(sql, args)
    db.execute("COMMIT")


def in_list(ids: list[int]) -> str:
    """`(1,2,3)` for an IN clause of ids (the bench's own integers)."""
    return "(" + ",".join(map(str, ids)) + ")"


def floor_name(db: sqlite3.Connection, cluster: int, name: str) -> None:
    """A cluster becomes a named person: the identity, its faces moved and made templates, the cluster gone."""
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    identity = db.execute("INSERT INTO identities (name, created, updated) VALUES (?, ?, ?)",
                          (name, now, now)).lastrowid
    db.execute("UPDATE faces SET identity_id = ?, cluster_id = NULL, assigned_by = 'user' WHERE cluster_id = ?",
               (identity, cluster))
    db.execute("INSERT INTO templates (identity_id, embedding, detection_score, created, face_id) SELECT ?, "
               "embedding, detection_score, ?, id FROM faces WHERE identity_id = ?", (identity, now, identity))
    db.execute("DELETE FROM clusters WHERE id = ?", (cluster,))
    db.execute("COMMIT")


def floor_split(db: sqlite3.Connection, faces: list[int]) -> None:
    """Faces moved into a new cluster."""
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    cluster = db.execute("INSERT INTO clusters (created, updated) VALUES (?, ?)", (now, now)).lastrowid
    db.execute(f"UPDATE faces SET cluster_id = ?, assigned_by = 'user' WHERE id IN {in_list(faces)}", (cluster,))
    db.execute("COMMIT")


FLOOR_PEOPLE = "SELECT identity_id, cluster_id, COUNT(*) FROM faces GROUP BY identity_id, cluster_id"
FLOOR_PAGE = ("SELECT f.*, p.path FROM faces f JOIN photos p ON p.id = f.photo_id WHERE f.identity_id IS NULL AND "
              f"f.cluster_id IS NULL AND f.embedding IS NOT NULL AND f.id > 0 ORDER BY f.id LIMIT {PAGE}")
FLOOR_PAGE_COUNTS = ("SELECT SUM(embedding IS NOT NULL), SUM(embedding IS NULL) FROM faces WHERE identity_id IS NULL "
                     "AND cluster_id IS NULL")


def floor_page(db: sqlite3.Connection) -> None:
    """The page's rows and its two counts (what the answer holds), without a read transaction around them."""
    db.execute(FLOOR_PAGE).fetchall()
    db.execute(FLOOR_PAGE_COUNTS).fetchone()


def timed(call: Callable[[], object]) -> float:
    """Seconds one call takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


Call = Callable[[], object]


def calls(people: People, floor: sqlite3.Connection, c: dict[str, Person], members: dict[int, list[int]], move: int,
          name: str) -> dict[str, tuple[Call, Call]]:
    """Each operation on this repetition's people, ours and its floor."""
    split, taken = members[c["split"].id][:move], members[c["not_this_person"].id][:move]
    a, b = c["merge_a"].id, c["merge_b"].id
    return {
        "name": (lambda: people.name(c["name"], name), lambda: floor_name(floor, c["name"].id, name)),
        "merge": (lambda: people.merge(c["merge_a"], c["merge_b"]),
                  lambda: write(floor, [("UPDATE faces SET cluster_id = ?, assigned_by = 'user' WHERE cluster_id IN "
                                         "(?, ?)", (a, a, b)), ("DELETE FROM clusters WHERE id = ?", (b,))])),
        "split": (lambda: people.split(split), lambda: floor_split(floor, split)),
        "not_this_person": (
            lambda: people.not_this_person(taken, c["not_this_person"]),
            lambda: write(floor, [("INSERT INTO cannot_link (face_id, cluster_id, created) SELECT id, cluster_id, 0 "
                                   f"FROM faces WHERE id IN {in_list(taken)}", ()),
                                  ("UPDATE faces SET cluster_id = NULL, assigned_by = 'auto' WHERE id IN "
                                   f"{in_list(taken)}", ())])),
        "remove": (lambda: people.remove(c["remove"]),
                   lambda: write(floor, [("DELETE FROM faces WHERE cluster_id = ?", (c["remove"].id,)),
                                         ("DELETE FROM clusters WHERE id = ?", (c["remove"].id,))])),
        "people": (people.people, lambda: floor.execute(FLOOR_PEOPLE).fetchall()),
        "unassigned_page": (lambda: people.unassigned_page(0, PAGE), lambda: floor_page(floor)),
    }


def run(args: argparse.Namespace, folder: Path) -> dict:
    """Build the gallery, copy it for the floors, time every operation interleaved with its floor."""
    ours_path, floor_path = folder / "people.db", folder / "floor.db"
    built = build(ours_path, args.faces, args.dim, args.cluster_size, args.unassigned, args.seed)
    members = built.pop("members")
    print(f"built {built['counts']['faces']:,} faces ({built['counts']['clusters']:,} clusters, "
          f"{built['counts']['unassigned']:,} unassigned, {built['file_mib']:.0f} MiB): add_faces "
          f"{built['add_faces_seconds']:.1f} s, apply_clustering {built['apply_clustering_seconds']:.1f} s",
          flush=True)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{ours_path}{suffix}").exists():
            shutil.copyfile(f"{ours_path}{suffix}", f"{floor_path}{suffix}")
    clusters = sorted(members)
    need = 6 * args.repeats
    if len(clusters) < need:
        raise SystemExit(f"{len(clusters)} clusters hold too few people for {args.repeats} repeats of every "
                         f"operation ({need} needed): give more --faces or a smaller --cluster-size")
    targets = {name: clusters[i * args.repeats:(i + 1) * args.repeats] for i, name in
               enumerate(("name", "merge_a", "merge_b", "split", "not_this_person", "remove"))}
    move = min(args.move, args.cluster_size - 1)
    times: dict[str, dict[str, list[float]]] = {op: {"ours": [], "floor": []} for op in OPERATIONS}
    floor = floor_connection(floor_path)
    with Gallery.open(ours_path) as gallery:
        people = People(gallery)
        for r in range(args.repeats):
            c = {name: Person("cluster", ids[r]) for name, ids in targets.items()}
            ops = calls(people, floor, c, members, move, f"Person {r}")
            for op in OPERATIONS:
                ours, bare = ops[op]
                first = ("ours", ours), ("floor", bare)
                for who, call in first if r % 2 == 0 else first[::-1]:  # alternate who goes first
                    times[op][who].append(timed(call))
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(
                f"{op} {times[op]['ours'][-1] * 1e3:.1f} ms" for op in OPERATIONS), flush=True)
        final = people.counts()
    floor.close()
    results = {}
    for op in OPERATIONS:
        ours, bare = statistics.median(times[op]["ours"]), statistics.median(times[op]["floor"])
        results[op] = {"ours_median_s": ours, "floor_median_s": bare, "x_floor": ours / bare if bare else None,
                       "ours_s": times[op]["ours"], "floor_s": times[op]["floor"]}
    return {"faces": args.faces, "dim": args.dim, "cluster_size": args.cluster_size, "unassigned": args.unassigned,
            "moved_faces": move, "repeats": args.repeats, "seed": args.seed, "build": built,
            "counts_after": final, "operations": results,
            "embeddings": "random unit vectors (latency only: no recognition quality is measured)"}


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=100_000, help="face records in the gallery")
    parser.add_argument("--dim", type=int, default=128, help="embedding size (the shipped MobileFaceNet's: 128)")
    parser.add_argument("--cluster-size", type=int, default=20, help="faces per cluster")
    parser.add_argument("--unassigned", type=float, default=0.05, help="share of the faces left in no person")
    parser.add_argument("--move", type=int, default=5, help="faces a split or 'not this person' moves")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where the two gallery files go (default: a "
                                                                  "temporary folder, removed after)")
    parser.add_argument("--out", type=Path, default=OUT / "people_ops.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    started, load = time.perf_counter(), os.getloadavg()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        results = run(args, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="people_ops.") as folder:
            results = run(args, Path(folder))
    results.update(load_average_start=load, load_average_end=os.getloadavg(),
                   wall_seconds=time.perf_counter() - started)
    print(f"\n{'operation':16s} {'ours ms':>9s} {'floor ms':>9s} {'x floor':>8s}")
    for op, r in results["operations"].items():
        ratio = f"{r['x_floor']:.2f}" if r["x_floor"] is not None else "-"
        print(f"{op:16s} {r['ours_median_s'] * 1e3:9.2f} {r['floor_median_s'] * 1e3:9.2f} {ratio:>8s}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['faces']:,} faces, {results['repeats']} repeats, {results['wall_seconds']:.0f} s in all, load "
          f"{load[0]:.1f} at the start; wrote {args.out}")


if __name__ == "__main__":
    main()
