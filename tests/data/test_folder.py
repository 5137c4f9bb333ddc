"""Image folders: labels by sorted name and the label map, bad files skipped and counted, odd modes converted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from marginface.data import ImageDecodeError, ImageFolderDataset, collate, to_model_input
from marginface.data.labels import read_class_names, write_class_names

from .helpers import write_identity_folder


def test_labels_by_sorted_folder_and_label_map(tmp_path: Path) -> None:
    root = write_identity_folder(tmp_path / "f", identities=3, per_identity=2)
    (root / "aaa_first").mkdir()
    cv2.imwrite(str(root / "aaa_first" / "x.png"), np.zeros((112, 112, 3), np.uint8))
    ds = ImageFolderDataset(root)
    assert ds.class_names[0] == "aaa_first" and ds.num_classes == 4
    assert ds[0].label == 0 and ds[1].label == 1
    write_class_names(tmp_path / "labels.json", ds.class_names)
    assert json.loads((tmp_path / "labels.json").read_text())["1"] == "id_00"
    assert read_class_names(tmp_path / "labels.json") == ds.class_names


def test_corrupt_and_truncated_images_skipped_and_counted(tmp_path: Path, caplog) -> None:
    root = write_identity_folder(tmp_path / "f", identities=2, per_identity=3, ext=".jpg")
    (root / "id_00" / "bad.jpg").write_bytes(b"not an image")
    good = (root / "id_01" / "0.jpg").read_bytes()
    (root / "id_01" / "trunc.jpg").write_bytes(good[:20])
    ds = ImageFolderDataset(root)
    with caplog.at_level(logging.WARNING):
        batches = list(DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=0))
    assert sum(b.skipped for b in batches) == 2
    assert sum(len(b.labels) for b in batches) == 6
    assert "bad.jpg" in caplog.text
    strict = ImageFolderDataset(root, on_error="raise")
    bad_index = [i for i, (p, _) in enumerate(strict.items) if p.name == "bad.jpg"][0]
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        strict[bad_index]


def test_loader_with_workers(tmp_path: Path) -> None:
    root = write_identity_folder(tmp_path / "f", identities=2, per_identity=4)
    loader = DataLoader(ImageFolderDataset(root), batch_size=3, collate_fn=collate, num_workers=2)
    batches = list(loader)
    assert sum(len(b.labels) for b in batches) == 8
    x = to_model_input(batches[0].images)
    assert x.shape == (3, 3, 112, 112) and x.min() >= -1 and x.max() <= 1


def test_modes_converted_and_wrong_size_resized(tmp_path: Path, caplog) -> None:
    root = tmp_path / "f" / "person"
    root.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(root / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(root / "alpha.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rgb).resize((90, 100)).save(root / "small.png")
    Image.fromarray(rgb).resize((200, 200)).save(root / "large.png")
    ds = ImageFolderDataset(tmp_path / "f")
    with caplog.at_level(logging.WARNING):
        samples = [ds[i] for i in range(len(ds))]
    assert all(s.image.shape == (112, 112, 3) and s.image.dtype == np.uint8 for s in samples)
    assert sum(s.resized for s in samples) == 2
    assert caplog.text.count("resizing") == 1  # warned once, counted always
    gray = next(s for (p, _), s in zip(ds.items, samples, strict=True) if p.name == "gray.png")
    assert np.all(gray.image[..., 0] == gray.image[..., 1])


def test_orl_grayscale_pgm(shared_data: Path) -> None:
    ds = ImageFolderDataset(shared_data / "orl_att_faces" / "att_faces")
    assert ds.num_classes == 40 and len(ds) == 400
    sample = ds[0]
    assert sample.image.shape == (112, 112, 3) and sample.resized  # 92×112 PGM is resized
