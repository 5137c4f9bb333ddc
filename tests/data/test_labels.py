"""One label map for every data set: class_names on folder, RecordIO and synthetic data, one JSON file."""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.data import ImageFolderDataset, RecordIODataset, RecordIOError, SyntheticFaces
from marginface.data.labels import LABELS_NAME, read_class_names, write_class_names
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
