"""Outputs land whole or not at all: writability checked first, temporaries renamed at the end, removed on
failure (a real full tmpfs when allowed, an injected ENOSPC otherwise), an existing pack kept intact."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from marginface.data import RecordIODataset
from marginface.data.pack import pack_folder
from marginface.data.pairs import write_bin
from marginface.data.staging import OutputError, StagedOutputs, ensure_writable
from marginface.data.synthetic import synthetic_pairs
from marginface.fileio import sha256_file

from .helpers import write_identity_folder


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_staged_outputs_commit_and_discard(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old")
    with StagedOutputs(tmp_path) as staging:
        staging.path("a.txt").write_text("new")
        staging.path("sub/b.txt").write_text("b")
        staging.scratch("work").write_text("scratch")
        assert (tmp_path / "a.txt").read_text() == "old"  # nothing replaced before the end
    assert (tmp_path / "a.txt").read_text() == "new" and (tmp_path / "sub" / "b.txt").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "sub"]
    with pytest.raises(RuntimeError, match="boom"), StagedOutputs(tmp_path) as staging:
        staging.path("a.txt").write_text("newer")
        staging.path("deep/er/c.txt").write_text("c")
        raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "sub"]  # temporaries and new dirs gone


def test_output_checks_before_work(tmp_path: Path, read_only_dir: Path) -> None:
    assert ensure_writable(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        ensure_writable(tmp_path / "file")
    with pytest.raises(OutputError, match=r"existing is not writable"):
        ensure_writable(read_only_dir / "existing")
    with pytest.raises(OutputError, match=r"cannot create output directory .*ro/out"):
        ensure_writable(read_only_dir / "out")
    folder = write_identity_folder(tmp_path / "faces", identities=2, per_identity=1)
    with pytest.raises(OutputError, match="not writable"):
        pack_folder(folder, read_only_dir / "existing")
    with pytest.raises(OutputError, match="not writable"):
        write_bin(synthetic_pairs(4, 2, num_folds=1), read_only_dir / "existing" / "s.bin")


def _pack_twice_on_a_full_disk(tmp_path: Path, out: Path) -> None:
    old = write_identity_folder(tmp_path / "old", identities=2, per_identity=2, ext=".jpg")
    new = write_identity_folder(tmp_path / "new", identities=5, per_identity=8, ext=".jpg")
    pack_folder(old, out)
    before = _digests(out)
    with pytest.raises(OutputError, match="No space left on device") as err:
        pack_folder(new, out)
    assert str(out) in str(err.value)
    assert _digests(out) == before  # the old pack is untouched, no temporaries remain
    assert len(RecordIODataset(out)) == 4


def test_full_disk_on_a_real_tmpfs(tmp_path: Path, small_disk) -> None:
    probe = tmp_path / "probe"
    pack_folder(write_identity_folder(tmp_path / "sizes", identities=2, per_identity=2, ext=".jpg"), probe)
    old_size = sum(p.stat().st_size for p in probe.iterdir())
    _pack_twice_on_a_full_disk(tmp_path, small_disk(old_size + 64 * 1024))


def test_full_disk_injected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where mounting is not allowed: every write of a temporary fails with ENOSPC once 40 kB are written."""
    import builtins

    real_open = builtins.open
    written = {"bytes": 0}

    class FillingFile:
        def __init__(self, handle) -> None:
            self._handle = handle

        def write(self, data) -> int:
            written["bytes"] += len(data)
            if written["bytes"] > 40_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._handle.write(data)

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._handle.close()

    def filling_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FillingFile(handle) if "w" in mode and str(file).endswith(".tmp") else handle

    out = tmp_path / "out"
    pack_folder(write_identity_folder(tmp_path / "first", identities=2, per_identity=2, ext=".jpg"), out)
    monkeypatch.setattr(builtins, "open", filling_open)
    before = _digests(out)
    with pytest.raises(OutputError, match="No space left on device"):
        pack_folder(write_identity_folder(tmp_path / "new", identities=5, per_identity=8, ext=".jpg"), out)
    monkeypatch.undo()
    assert written["bytes"] > 40_000 and _digests(out) == before


def test_old_pack_intact_when_packing_fails_half_way(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pack_folder(write_identity_folder(tmp_path / "first", identities=2, per_identity=2), out)
    before = _digests(out)
    seen = []

    def interrupt(done: int, total: int) -> None:
        seen.append(done)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack_folder(write_identity_folder(tmp_path / "second", identities=3, per_identity=2), out, interrupt)
    assert seen == [1, 2, 3] and _digests(out) == before


def test_unreadable_input_is_skipped_not_blamed_on_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_identity_folder(tmp_path / "faces", identities=2, per_identity=2)
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "1.png" and self.parent.name == "id_00":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = pack_folder(folder, tmp_path / "out")
    assert (report.images, report.skipped) == (3, [str(folder / "id_00" / "1.png")])
    with pytest.raises(PermissionError), StagedOutputs(tmp_path / "out2"):  # a read error elsewhere stays itself
        (folder / "id_00" / "1.png").read_bytes()


class _TemplateDetector:
    """Finds one face per photo, at the alignment template's landmarks (no model needed)."""

    def detect(self, rgb):
        import numpy as np

        from marginface.data.align import ARCFACE_TEMPLATE
        from marginface.infer.detect import Face

        return [Face(np.array([20.0, 20.0, 70.0, 80.0]), np.asarray(ARCFACE_TEMPLATE, dtype=np.float64), 0.99)]


def test_align_outputs_are_staged(tmp_path: Path) -> None:
    from marginface.infer.prepare import align_folder

    raw = write_identity_folder(tmp_path / "raw", identities=2, per_identity=2)
    out = tmp_path / "aligned"
    (out / "id_00").mkdir(parents=True)
    (out / "id_00" / "0.jpg").write_bytes(b"an earlier result")

    def interrupt(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        align_folder(raw, out, _TemplateDetector(), progress=interrupt)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["id_00", "id_00/0.jpg"]
    assert (out / "id_00" / "0.jpg").read_bytes() == b"an earlier result"
    report = align_folder(raw, out, _TemplateDetector())
    assert report.aligned == 4 and (out / "no_face.txt").read_text() == ""
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg")) == [
        "id_00/0.jpg", "id_00/1.jpg", "id_01/0.jpg", "id_01/1.jpg"]
    assert not list(out.rglob("*.tmp"))
