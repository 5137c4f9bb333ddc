"""Benchmark: FaceRecognizer.scan over LFW photos with its workers beside the serial path, same run.

Three configurations, each in a fresh process (so the CPU mask is set before onnxruntime or OpenCV start a
thread) and interleaved round by round to share the machine's noise:

- serial, 1 core:   workers=1 pinned to one CPU (os.sched_setaffinity before the child starts) with one
                    onnxruntime and one OpenCV thread (onnxruntime pins its own pool's threads to every core,
                    past the process mask: without this the "one core" run keeps ~1.7 cores busy), the
                    one-core figure;
- serial, N cores:  workers=1 on every CPU this process may use (onnxruntime's own threads use them);
- parallel:         the default workers (one per usable CPU) on every CPU.

Each process loads the recognizer, warms up (sessions, worker slots) on 2 x workers x 32 photos, then
times one scan(paths) over all of them: decode + detect + align + embed with the flip test, files read
from the page cache (read once first). photos/s is the median over rounds; "cores busy" is the process's
user + system CPU time over the wall time, and CPU ms per photo the work itself, whatever the machine's
load lets through. ratio = parallel photos/s / serial-1-core photos/s.

    python bench/scan.py                        # 400 photos, 3 rounds; writes bench/results/infer/scan.json
    python bench/scan.py --photos 60 --rounds 1 --out /tmp/scan.json    # a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_infer", HERE / "infer.py")
bench_infer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_infer)

log = logging.getLogger("bench.scan")
GOAL = 1.7  # issue 18: parallel scan >= 1.7x one core's photos/s on the 2-core machine


def configurations(cpus: list[int]) -> dict[str, dict]:
    """name -> (CPUs the process may use, workers; None = the library's default)."""
    return {"serial_1_core": {"cpus": cpus[:1], "workers": 1, "threads": 1},
            "serial_all_cores": {"cpus": cpus, "workers": 1},
            "parallel_all_cores": {"cpus": cpus, "workers": None}}


def measure(config: dict, photos: int) -> dict:
    """One configuration in this process: warm up, then time one scan over `photos` LFW photos."""
    os.sched_setaffinity(0, config["cpus"])  # first: every thread started from here on inherits the mask
    from marginface.infer.recognizer import FaceRecognizer, scan_workers

    data = bench_infer.data_dir()
    model, yunet = bench_infer.model_paths(data)
    paths = bench_infer.lfw_photos(data, photos)
    threads = config.get("threads")
    if threads is not None:  # onnxruntime pins its pool's threads to cores itself, past the process mask: one
        import cv2  # core means one thread, for the model and for OpenCV's detector alike

        cv2.setNumThreads(threads)
    recognizer = FaceRecognizer(model, yunet, threads=threads)
    workers = scan_workers(config["workers"])
    list(recognizer.scan(paths[:2 * workers * recognizer.batch_size], workers=workers))  # sessions, slots
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    faces = errors = 0
    for _, found in recognizer.scan(paths, workers=workers):
        if isinstance(found, Exception):
            errors += 1
        else:
            faces += len(found)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpus": sorted(os.sched_getaffinity(0)), "workers": workers, "photos": len(paths), "faces": faces,
            "errors": errors, "wall_s": wall, "photos_per_s": len(paths) / wall, "cpu_s": cpu,
            "cpu_ms_per_photo": 1000 * cpu / len(paths), "cores_busy": cpu / wall}


def run_child(config: dict, photos: int) -> dict:
    """measure() in a fresh process; its result is the last line of its stdout."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config), "--photos", str(photos)]
    cpus = config["cpus"]  # set before the child's interpreter starts: threads that numpy, onnxruntime or OpenCV
    # start while modules load (before measure() runs) inherit it too, so "1 core" means one core
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600,
                          preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    if done.returncode != 0:
        raise RuntimeError(f"bench/scan.py child {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_scan(photos: int, rounds: int) -> dict:
    """Every configuration `rounds` times, interleaved; medians and the ratio to one core."""
    cpus = sorted(os.sched_getaffinity(0))
    configs = configurations(cpus)
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for path in bench_infer.lfw_photos(bench_infer.data_dir(), photos):
        path.read_bytes()  # the page cache warm for every configuration, the first included
    for round_index in range(rounds):
        for name, config in configs.items():
            result = run_child(config, photos)
            runs[name].append(result)
            print(f"round {round_index + 1}/{rounds} {name:18s}: {result['photos_per_s']:6.1f} photos/s, "
                  f"{result['workers']} workers on CPUs {result['cpus']}, cores busy {result['cores_busy']:.2f}, "
                  f"{result['cpu_ms_per_photo']:.1f} CPU ms/photo, "
                  f"{result['faces']} faces", flush=True)
    pps = {name: statistics.median(r["photos_per_s"] for r in results) for name, results in runs.items()}
    busy = {name: statistics.median(r["cores_busy"] for r in results) for name, results in runs.items()}
    cpu_ms = {name: statistics.median(r["cpu_ms_per_photo"] for r in results) for name, results in runs.items()}
    faces = {name: sorted({r["faces"] for r in results}) for name, results in runs.items()}
    ratio = pps["parallel_all_cores"] / pps["serial_1_core"]
    result = {"photos": photos, "rounds": rounds, "cpus": cpus, "workers": runs["parallel_all_cores"][0]["workers"],
              "photos_per_s": pps, "cores_busy": busy, "cpu_ms_per_photo": cpu_ms, "faces": faces,
              "ratio_parallel_to_serial_1_core": ratio,
              "ratio_parallel_to_serial_all_cores": pps["parallel_all_cores"] / pps["serial_all_cores"],
              "ratio_serial_all_cores_to_1_core": pps["serial_all_cores"] / pps["serial_1_core"],
              "goal": GOAL, "goal_met": ratio >= GOAL, "runs": runs}
    print(f"scan, {photos} LFW photos, median of {rounds}: 1 worker on 1 core {pps['serial_1_core']:.1f} photos/s, "
          f"1 worker on {len(cpus)} cores {pps['serial_all_cores']:.1f}, {result['workers']} workers on {len(cpus)} "
          f"cores {pps['parallel_all_cores']:.1f}: {ratio:.2f}x one core (goal {GOAL}x: "
          f"{'met' if result['goal_met'] else 'not met'})")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=400, help="LFW photos per scan (default 400)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians reported (default 3)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "infer" / "scan.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one configuration, run by the parent in a process
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.photos)))
        return 0
    data = bench_infer.data_dir()
    if not (data / "lfw").is_dir():
        print(f"bench/scan.py: LFW not found under {data} (set MARGINFACE_DATA)", file=sys.stderr)
        return 2
    out: dict = {"cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg())}
    out["scan"] = bench_scan(args.photos, args.rounds)
    bench_infer.write_results(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
