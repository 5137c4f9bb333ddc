"""Verification sets: .bin round trip, hostile pickles refused, fuzzed bytes, LFW pairs.txt."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginface.data import PairSetError, read_bin, read_pairs_txt, synthetic_pairs, write_bin


def test_bin_write_read_identical(tmp_path: Path) -> None:
    pairs = synthetic_pairs(num_identities=10, pairs_per_fold=2, num_folds=3)
    write_bin(pairs, tmp_path / "syn.bin")
    loaded = read_bin(tmp_path / "syn.bin", num_folds=3)
    assert len(loaded) == len(pairs) == 12
    np.testing.assert_array_equal(loaded.issame, pairs.issame)
    np.testing.assert_array_equal(loaded.folds, pairs.folds)
    for (a, b), (c, d) in zip(loaded.pairs, pairs.pairs, strict=True):
        np.testing.assert_array_equal(loaded.load_image(a), pairs.load_image(c))  # PNG is lossless
        np.testing.assert_array_equal(loaded.load_image(b), pairs.load_image(d))
    write_bin(loaded, tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "syn.bin").read_bytes()


def test_insightface_style_numpy_flags(tmp_path: Path) -> None:
    (tmp_path / "np.bin").write_bytes(pickle.dumps(([b"a", b"b", b"c", b"d"], np.array([True, False])), protocol=2))
    loaded = read_bin(tmp_path / "np.bin")
    assert loaded.issame.tolist() == [True, False]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/marginface_pwned",))


def test_hostile_bin_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = Path("/tmp/marginface_pwned")
    marker.unlink(missing_ok=True)
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([b"x", b"y"], [_Exploit()])))
    with pytest.raises(PairSetError, match="not allowed"):
        read_bin(tmp_path / "evil.bin")
    assert not marker.exists()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), cut=st.integers(0, 200))
def test_random_and_truncated_bytes_raise_only_pairset_error(tmp_path: Path, data: bytes, cut: int) -> None:
    good = pickle.dumps(([b"img1", b"img2"], [True]), protocol=4)
    for candidate in (data, good[:cut], good[:cut] + data):
        (tmp_path / "f.bin").write_bytes(candidate)
        try:
            read_bin(tmp_path / "f.bin")
        except PairSetError:
            pass


def test_lfw_pairs_txt(shared_data: Path) -> None:
    lfw = shared_data / "lfw"
    pairs = read_pairs_txt(lfw / "pairs.txt", lfw / "lfw-deepfunneled")
    assert len(pairs) == 6000 and pairs.num_folds == 10
    for fold in range(10):
        in_fold = pairs.folds == fold
        assert in_fold.sum() == 600
        assert pairs.issame[in_fold].sum() == 300
    assert all(isinstance(p, Path) and p.is_file() for p in pairs.images[:50])
    subset = pairs.subset([0])
    assert len(subset) == 600 and subset.load_image(0).shape == (250, 250, 3)


def test_pairs_txt_errors(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("2 1\nA 1 2\nB 1 C 1\n")
    with pytest.raises(PairSetError, match="header says 2 folds"):
        read_pairs_txt(tmp_path / "p.txt", tmp_path, check_files=False)
    (tmp_path / "p.txt").write_text("1 1\nA 1 2\nB 1\n")
    with pytest.raises(PairSetError, match="line 3 has 2 fields"):
        read_pairs_txt(tmp_path / "p.txt", tmp_path, check_files=False)
    (tmp_path / "p.txt").write_text("1 1\nA 1 2\nB 1 C 1\n")
    with pytest.raises(PairSetError, match="missing"):
        read_pairs_txt(tmp_path / "p.txt", tmp_path)
