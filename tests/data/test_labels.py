"""One label map for every data set: class_names on folder, RecordIO and synthetic data, one JSON file."""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.data import ImageFolderDataset, RecordIODataset, RecordIOError, SyntheticFaces
from marginface.data.labels import LABELS_NAME, LEGACY_LABELS_NAME, read_class_names, write_class_names
from marginface.data.pack import pack_folder

from .helpers import write_identity_folder


def test_any_name_round_trips(tmp_path: Path) -> None:
    names = ["plain", "tab\there", "new\nline", "Zoë Ångström", '"quoted"', ""]
    path = write_class_names(tmp_path / LABELS_NAME, names)
    assert read_class_names(path) == names
    assert path.read_text(encoding="utf-8").startswith('{\n "0": "plain"')


@pytest.mark.parametrize("text", ["[1, 2]", '{"0": "a", "2": "b"}', '{"0": 1}', "not json", '{"1": "a"}'])
def test_a_bad_label_map_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / LABELS_NAME
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)):
        read_class_names(path)


def test_every_dataset_has_class_names(tmp_path: Path) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=3, per_identity=2)
    assert ImageFolderDataset(folder).class_names == ["id_00", "id_01", "id_02"]
    pack_folder(folder, tmp_path / "rec")
    assert RecordIODataset(tmp_path / "rec").class_names == ["id_00", "id_01", "id_02"]
    (tmp_path / "rec" / LABELS_NAME).unlink()  # an insightface pack: no names, the label is the name
    assert RecordIODataset(tmp_path / "rec").class_names == ["0", "1", "2"]
    assert SyntheticFaces(2, 1, first_identity=5).class_names == ["synthetic_5", "synthetic_6"]


def test_a_label_map_that_does_not_fit_the_pack_is_refused(tmp_path: Path) -> None:
    pack_folder(write_identity_folder(tmp_path / "faces", identities=3, per_identity=1), tmp_path / "rec")
    write_class_names(tmp_path / "rec" / LABELS_NAME, ["only", "two"])
    with pytest.raises(RecordIOError, match="2 names for 3 classes"):
        _ = RecordIODataset(tmp_path / "rec").class_names


def test_an_older_pack_keeps_its_names_from_labels_tsv(tmp_path: Path) -> None:
    pack_folder(write_identity_folder(tmp_path / "faces", identities=3, per_identity=1), tmp_path / "rec")
    (tmp_path / "rec" / LABELS_NAME).unlink()
    legacy = tmp_path / "rec" / LEGACY_LABELS_NAME
    legacy.write_text("0\tann\n1\tbob\n2\tcy d\n", encoding="utf-8")
    assert RecordIODataset(tmp_path / "rec").class_names == ["ann", "bob", "cy d"]
    legacy.write_text("0\tann\n2\tbob\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"labels.tsv line 2: expected '1<TAB>name'"):
        _ = RecordIODataset(tmp_path / "rec").class_names


def test_training_refuses_a_label_map_that_does_not_fit_before_it_starts(tmp_path: Path) -> None:
    from marginface.train.config import load_config
    from marginface.train.trainer import Trainer

    pack_folder(write_identity_folder(tmp_path / "faces", identities=3, per_identity=4), tmp_path / "rec")
    write_class_names(tmp_path / "rec" / LABELS_NAME, ["only", "two"])
    config = load_config(None, ["data.kind=recordio", f"data.path={tmp_path / 'rec'}", "data.workers=0",
                                "data.batch_size=4", "model.backbone=mbf", "model.num_features=8",
                                "model.kwargs={scale: 1, blocks: [1, 1, 1, 1]}", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(RecordIOError, match="2 names for 3 classes"):
        Trainer(config)
    assert not (tmp_path / "run" / LABELS_NAME).exists()


@pytest.mark.parametrize("damage", ["count", "folder", "dangling", "deep", "latin1_tsv"])
def test_data_check_and_training_read_the_label_file_alike(tmp_path: Path, damage: str) -> None:
    from marginface.data.check import check_pack

    rec = tmp_path / "rec"
    pack_folder(write_identity_folder(tmp_path / "faces", identities=3, per_identity=1), rec)
    labels = rec / LABELS_NAME
    labels.unlink()
    if damage == "count":
        write_class_names(labels, ["only", "two"])
    elif damage == "folder":
        labels.mkdir()
    elif damage == "dangling":
        labels.symlink_to(tmp_path / "gone.json")
    elif damage == "deep":
        labels.write_text("[" * 200_000)
    else:
        (rec / LEGACY_LABELS_NAME).write_bytes(b"0\tJos\xe9\n1\tb\n2\tc\n")
    report = check_pack(rec)
    assert not report.ok and any(("labels" in p) for p in report.problems), report.problems
    with pytest.raises((ValueError, OSError), match="labels"):
        _ = RecordIODataset(rec).class_names


def test_trailing_blank_lines_of_labels_tsv_are_ignored(tmp_path: Path) -> None:
    from marginface.data.labels import read_legacy_class_names

    (tmp_path / "labels.tsv").write_text("0\ta\n1\tb\n\n\n")
    assert read_legacy_class_names(tmp_path / "labels.tsv") == ["a", "b"]
