"""Identity folders with hostile names and links: TAB / newline names refused for packing, symlinked
identities neither loop nor pack a photo twice nor leave empty classes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from marginface.data import ImageFolderDataset, RecordIODataset
from marginface.data.folder import survey_identity_folder
from marginface.data.labels import read_class_names
from marginface.data.pack import pack_folder

from .helpers import write_identity_folder


@pytest.mark.parametrize("name", ["tab\there", "new\nline", "carriage\rreturn", "sep\u2028line"])
def test_names_with_control_characters_are_refused_before_work(tmp_path: Path, name: str) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=2, per_identity=1)
    (folder / "id_00").rename(folder / name)
    with pytest.raises(ValueError, match=r"on one line\), e\.g\. " + repr(name).replace("\\", "\\\\")):
        pack_folder(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the output was even created
    assert survey_identity_folder(folder).unsafe_names == [name]
    assert ImageFolderDataset(folder).num_classes == 2  # training from the folder itself is unaffected


def test_symlinked_identities_loops_and_duplicates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=3, per_identity=2)
    os.symlink(folder / "id_01", folder / "alias_of_id_01")  # the same person twice: kept where it really is
    os.symlink(folder, folder / "zz_root_loop")  # points back at the root: only identity folders inside, no images
    os.symlink(folder / "id_02" / "self", folder / "id_02" / "self")  # a link to itself
    os.symlink(folder / "id_00" / "0.png", folder / "id_02" / "stolen.png")  # one photo under two identities
    (folder / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderDataset(folder)
    assert dataset.class_names == ["id_00", "id_01", "id_02"]
    labels = {path.name: label for path, label in dataset.items if path.parent.name == "id_02"}
    assert labels == {"0.png": 2, "1.png": 2}  # stolen.png is id_00's photo: not packed a second time
    assert len(dataset) == 6
    assert "3 photos appear under more than one identity" in caplog.text
    assert "3 identity folders have no images of their own" in caplog.text
    report = pack_folder(folder, tmp_path / "out")
    assert (report.classes, report.images) == (3, 6)
    assert read_class_names(tmp_path / "out" / "labels.json") == ["id_00", "id_01", "id_02"]
    assert RecordIODataset(tmp_path / "out").class_names == ["id_00", "id_01", "id_02"]
