"""Benchmark: decode throughput from RecordIO and from an image folder vs the bare decode floor.

The same N synthetic 112×112 JPEGs are stored three ways: as bytes in memory (floor: cv2.imdecode only),
as an identity folder, and as train.rec/.idx. Each path's time per image is reported as a multiple of the
floor's, single process (no augmentation: the trainer flips whole batches on the device). Then a 2-worker
DataLoader over the RecordIO set is timed beside MobileFaceNet training steps (forward + backward + ArcFace
head, batch 128) to see whether the loader keeps up.

    python bench/data.py                 # N = 2000; writes bench/results/data.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from marginface.backbones import get_backbone
from marginface.data import ImageFolderDataset, RecordIODataset, collate, encode_image, synthetic_face, to_model_input
from marginface.data.pack import pack_folder
from marginface.heads import ArcFace


def _write_images(root: Path, count: int, identities: int) -> list[bytes]:
    blobs = []
    for i in range(count):
        identity = i % identities
        data = encode_image(synthetic_face(0, identity, i), ".jpg")
        folder = root / f"id_{identity:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(data)
        blobs.append(data)
    return blobs


def _per_image(fn, count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / count)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        blobs = _write_images(root / "folder", args.images, identities=100)
        pack_folder(root / "folder", root / "rec")
        folder = ImageFolderDataset(root / "folder")
        record = RecordIODataset(root / "rec")
        cv2.setNumThreads(1)

        def floor() -> None:
            for data in blobs:
                cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

        def read_all(dataset) -> None:
            for i in range(len(dataset)):
                dataset[i]

        floor_s = _per_image(floor, len(blobs), args.repeats)
        folder_s = _per_image(lambda: read_all(folder), len(folder), args.repeats)
        record_s = _per_image(lambda: read_all(record), len(record), args.repeats)
        rows = [("floor (cv2.imdecode in memory)", floor_s), ("image folder", folder_s), ("RecordIO", record_s)]
        for name, seconds in rows:
            print(f"{name:32s} {1 / seconds:8.0f} img/s per worker  {seconds / floor_s:5.2f}x floor")

        loader = DataLoader(record, batch_size=128, shuffle=True, num_workers=2, collate_fn=collate,
                            persistent_workers=True, drop_last=True)
        start, seen = time.perf_counter(), 0
        for batch in loader:
            seen += len(batch.labels)
        loader_ips = seen / (time.perf_counter() - start)

        model, head = get_backbone("mbf"), ArcFace(512, 100)
        opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.01)
        batch = next(iter(loader))
        x = to_model_input(batch.images)
        steps, start = 3, 0.0
        for step in range(steps + 1):
            if step == 1:
                start = time.perf_counter()
            opt.zero_grad()
            head(model(x), batch.labels).backward()
            opt.step()
        train_ips = 128 * steps / (time.perf_counter() - start)
        print(f"2-worker RecordIO loader alone: {loader_ips:7.0f} img/s; MobileFaceNet training: "
              f"{train_ips:6.0f} img/s -> loader/training = {loader_ips / train_ips:5.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "images": args.images,
        "per_worker_img_per_s": {name: 1 / s for name, s in rows},
        "ratio_to_floor": {name: s / floor_s for name, s in rows},
        "loader_2_workers_img_per_s": loader_ips, "mobilefacenet_train_img_per_s": train_ips,
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
