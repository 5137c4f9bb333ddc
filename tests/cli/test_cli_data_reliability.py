"""Hostile data and disks through the real command line (issue 9): each probe must end in seconds with exit
status 2 and one `marginface: error:` line naming the file and the record (no traceback), under a memory
limit, leaving earlier outputs intact.

All probes run in ONE child process (torch is imported once) with RLIMIT_AS and a timeout; the child runs
`marginface.cli.main(argv)` for each and reports status, output, captured log records and seconds as JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from marginface.data.pack import pack_folder
from marginface.data.recordio import read_index, write_face_records
from marginface.fileio import sha256_file

from ..data.helpers import tmpfs, write_identity_folder, write_raw_pack

MEMORY_LIMIT = 3 << 30  # bytes of address space for the child (torch needs ~1.5 GB of it to import)
PROGRESS_BAR = re.compile(r"^\w+: +\d+%\|")
PROBE_SECONDS = 60  # each probe; the runaway cases never ended (or were OOM-killed at 24 GB)

DRIVER = r"""
import contextlib, io, json, logging, resource, sys, time, traceback
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
records = []
class Collect(logging.Handler):
    def emit(self, record):
        records.append(record.levelname + " " + record.getMessage())
logging.basicConfig(handlers=[Collect()], level=logging.INFO)
from marginface.cli import main
for name, argv in json.load(sys.stdin).items():
    records.clear()
    out, err, start = io.StringIO(), io.StringIO(), time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    except BaseException as exc:  # what the command let through: a traceback for the user
        status = "traceback: " + "".join(traceback.format_exception(exc))[-3000:]
    result = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue(), "log": list(records),
              "seconds": time.perf_counter() - start}
    print(json.dumps({name: result}), flush=True)
"""

TRAIN = ["data.kind=recordio", "data.batch_size=4", "data.workers=0", "data.flip=false", "model.backbone=mbf",
         "model.num_features=16", "model.kwargs={scale: 1, blocks: [1, 1, 1, 1]}", "head.s=16.0",
         "optim.max_steps=40", "log_every=1000", "checkpoint_every=0", "export_onnx=false", "eval.synthetic=false"]


def _train(pack: Path, run: Path) -> list[str]:
    overrides = [*TRAIN, f"data.path={pack}", f"output_dir={run}"]
    return ["train", *[arg for value in overrides for arg in ("--set", value)]]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, dict]]:
    """(results by probe name, facts the assertions need); the inputs are made here, then one child runs all."""
    root = tmp_path_factory.mktemp("probes")
    facts: dict = {}
    argv: dict[str, list[str]] = {}
    labels = [float(i // 4) for i in range(28)]  # 28 images of 7 identities

    junk = root / "junk"
    write_face_records(junk, [(b"not an image %d" % i, i // 50) for i in range(400)], 8)
    argv["train_all_undecodable"] = _train(junk, root / "run_junk")
    for name, ranges in [("absurd", (1e9, 1e9 + 640)), ("short", (10, 20)), ("beyond", (35, 45))]:
        argv[f"train_ranges_{name}"] = _train(write_raw_pack(root / name, labels, ranges=ranges), root / f"r_{name}")
    for name, bad in [("fractional", 2.7), ("nan", float("nan")), ("out_of_range", 9.0)]:
        pack = write_raw_pack(root / name, [0.0, 0.0, 1.0, bad, 1.0, 2.0, 2.0, 0.0], classes=3)
        argv[f"train_label_{name}"] = _train(pack, root / f"r_{name}")
    argv["train_label_in_worker"] = [*_train(root / "fractional", root / "r_worker"), "--set", "data.workers=2"]
    for name, text in [("binary", b"\x00\xff\xfe\x89PNG"), ("zero", b"0,112,112\n"), ("negative", b"-4,112,112\n")]:
        pack = write_raw_pack(root / f"prop_{name}", labels, property_text=text)
        argv[f"train_property_{name}"] = _train(pack, root / f"rp_{name}")

    faces = write_identity_folder(root / "faces", identities=3, per_identity=3, ext=".jpg")
    good = root / "good"
    pack_folder(faces, good)
    argv["check_good_pack"] = ["data", "check", str(good)]
    bad = root / "bad_pack"
    pack_folder(faces, bad)
    offsets = read_index(bad / "train.idx")
    blob = bytearray((bad / "train.rec").read_bytes())
    blob[offsets[4] + 8 + 24:offsets[4] + 8 + 64] = bytes(40)
    (bad / "train.rec").write_bytes(bytes(blob))
    facts["bad_offset"] = offsets[4]
    argv["check_bad_pack"] = ["data", "check", str(bad)]

    tabbed = write_identity_folder(root / "tabbed", identities=2, per_identity=1)
    (tabbed / "id_00").rename(tabbed / "first\tlast")
    argv["pack_tab_name"] = ["data", "pack", str(tabbed), str(root / "tab_out")]

    with ExitStack() as stack:
        read_only = stack.enter_context(tmpfs(root / "ro", 64 * 1024, read_only=True, prepare=("existing",)))
        facts["read_only_mounted"] = read_only is not None
        if read_only is not None:
            argv["pack_read_only"] = ["data", "pack", str(faces), str(read_only / "existing")]
            argv["bin_read_only"] = ["data", "bin", str(root / "pairs.txt"), str(faces), str(read_only / "x.bin")]
            argv["align_read_only"] = ["data", "align", str(faces), str(read_only / "existing"), "--detector",
                                       str(root / "no_such_detector.onnx")]  # the output is checked first
            (root / "pairs.txt").write_text("1 1\nid_00 0 1\nid_00 0 id_01 0\n")
        old_faces = write_identity_folder(root / "old_faces", identities=2, per_identity=2, ext=".jpg")
        pack_folder(old_faces, root / "size_probe")
        old_size = sum(p.stat().st_size for p in (root / "size_probe").iterdir())
        disk = stack.enter_context(tmpfs(root / "disk", old_size + 48 * 1024))
        facts["disk_mounted"] = disk is not None
        if disk is not None:
            pack_folder(old_faces, disk / "pack")
            facts["old_pack"] = _digests(disk / "pack")
            many = write_identity_folder(root / "many", identities=6, per_identity=8, ext=".jpg")
            argv["pack_full_disk"] = ["data", "pack", str(many), str(disk / "pack")]
        argv["train_all_undecodable"] = argv.pop("train_all_undecodable")  # last: a hang must not hide the rest
        try:
            done = subprocess.run([sys.executable, "-c", DRIVER, str(MEMORY_LIMIT)], input=json.dumps(argv),
                                  capture_output=True, text=True, timeout=PROBE_SECONDS * 4,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            output = done.stdout
        except subprocess.TimeoutExpired as timeout:  # the probes that finished still count
            output = (timeout.stdout or b"").decode() if isinstance(timeout.stdout, bytes) else timeout.stdout or ""
        results: dict = {}
        for line in output.splitlines():
            results.update(json.loads(line))
        if disk is not None:
            facts["pack_after"] = _digests(disk / "pack")
        yield results, facts


def _one_error(results: dict, name: str, *fragments: str) -> str:
    result = results.get(name)
    assert result is not None, f"probe {name} did not finish"
    assert result["status"] == 2, result["status"]  # the driver's timeout (PROBE_SECONDS * 4) is the hang guard
    segments = [s.strip() for s in re.split(r"[\r\n]", result["stderr"]) if s.strip()]
    lines = [s for s in segments if not PROGRESS_BAR.match(s)]  # tqdm redraws on stderr are not messages
    assert len(lines) == 1 and lines[0].startswith("marginface: error: "), result["stderr"]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_all_undecodable_training_stops_with_counts(probes) -> None:
    results, _ = probes
    line = _one_error(results, "train_all_undecodable", "junk/train.rec", "no decodable image",
                      "were undecodable")
    skips = [r for r in results["train_all_undecodable"]["log"] if "skipping" in r]
    assert 1 <= len(skips) <= 5, skips  # the first few, then only counted
    assert "400" in line or "batches in a row" in line


@pytest.mark.parametrize(("name", "fragment"), [
    ("absurd", "record 0 announces 999999999 images"),
    ("short", "record 0 announces keys 0..19"),
    ("beyond", "record 0 announces 34 images and 10 identity records"),
])
def test_record0_ranges_refused_before_allocating(probes, name: str, fragment: str) -> None:
    results, _ = probes
    _one_error(results, f"train_ranges_{name}", f"{name}/train.rec", fragment)


@pytest.mark.parametrize(("name", "fragment"), [
    ("fractional", "record 4: label 2.7 is not an integer class"),
    ("nan", "record 4: label is nan"),
    ("out_of_range", "record 4: label 9 is outside the class range [0, 3)"),
])
def test_bad_labels_name_file_and_record(probes, name: str, fragment: str) -> None:
    results, _ = probes
    _one_error(results, f"train_label_{name}", f"{name}/train.rec {fragment}")


def test_bad_label_met_in_a_dataloader_worker_keeps_its_message(probes) -> None:
    results, _ = probes
    line = _one_error(results, "train_label_in_worker", "fractional/train.rec record 4: label 2.7 is not an integer")
    assert "DataLoader worker" not in line and "Traceback" not in results["train_label_in_worker"]["stderr"]


@pytest.mark.parametrize(("name", "fragment"), [
    ("binary", "expected 'num_classes,height,width', found binary data"),
    ("zero", "the number of classes must be positive, found 0"),
    ("negative", "the number of classes must be positive, found -4"),
])
def test_bad_property_names_the_file(probes, name: str, fragment: str) -> None:
    results, _ = probes
    _one_error(results, f"train_property_{name}", f"prop_{name}/property: {fragment}")


def test_data_check_reports_and_sets_the_exit_status(probes) -> None:
    results, facts = probes
    good, bad = results["check_good_pack"], results["check_bad_pack"]
    assert good["status"] == 0 and "OK: no problems found" in good["stdout"], good
    assert "9 images, 9 decode, 3 identities (images per identity: min 3, median 3, max 3)" in good["stdout"]
    assert bad["status"] == 2 and "1 problems found" in bad["stdout"], bad
    assert f"bad_pack/train.rec record 4 (offset {facts['bad_offset']}): cannot decode image" in bad["stdout"]


def test_pack_refuses_names_with_control_characters(probes) -> None:
    results, _ = probes
    _one_error(results, "pack_tab_name", "'first\\tlast'", "other control character")


def test_read_only_outputs_fail_before_work(probes) -> None:
    results, facts = probes
    if not facts["read_only_mounted"]:  # only the mount failing skips: a probe that hung or crashed fails below
        pytest.skip("cannot mount a read-only tmpfs here (covered in tests/data/test_staging.py)")
    _one_error(results, "pack_read_only", "ro/existing is not writable", "Read-only file system")
    _one_error(results, "bin_read_only", "ro is not writable")
    _one_error(results, "align_read_only", "ro/existing is not writable")


def test_full_disk_keeps_the_old_pack(probes) -> None:
    results, facts = probes
    if not facts["disk_mounted"]:  # only the mount failing skips: a probe that hung or crashed fails below
        pytest.skip("cannot mount a tmpfs here (an injected ENOSPC is tested in tests/data/test_staging.py)")
    _one_error(results, "pack_full_disk", "No space left on device", "disk/pack")
    assert facts["pack_after"] == facts["old_pack"]  # same files, same bytes: no temporaries left either
