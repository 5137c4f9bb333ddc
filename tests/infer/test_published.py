"""Published model files: fetched once into the cache, hash-checked, and a clear offline error."""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.fileio import sha256_file
from marginface.infer.published import fetch_model


def test_fetch_model_uses_cache_and_checks_hash(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"weights")
    digest = sha256_file(source)
    cached = fetch_model(source.as_uri(), digest, tmp_path / "cache")
    assert cached.read_bytes() == b"weights"
    source.unlink()  # a second call must not need the source any more
    assert fetch_model(source.as_uri(), digest, tmp_path / "cache") == cached
    other = tmp_path / "other.onnx"
    other.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        fetch_model(other.as_uri(), digest, tmp_path / "cache2")


def test_fetch_model_unreachable_names_url_and_offline_target(tmp_path: Path) -> None:
    """Offline, the error names the URL, the expected hash and where to put the file; no partial file stays."""
    missing = (tmp_path / "gone" / "model.onnx").as_uri()
    with pytest.raises(OSError, match="cannot download .*model.onnx.*sha256 abc.*cache"):
        fetch_model(missing, "abc", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
