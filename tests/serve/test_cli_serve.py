"""`marginface serve`: refuses a public bind without a key and a missing gallery, with one error line, status 2."""

from __future__ import annotations

from marginface.cli import main


def test_public_bind_without_a_key_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MARGINFACE_API_KEY", raising=False)
    gallery = tmp_path / "people.db"
    assert main(["serve", str(gallery), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("marginface: error: refusing to bind '0.0.0.0' without an API key")
    assert "\n" not in err


def test_missing_gallery_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MARGINFACE_API_KEY", "k")  # the key from the environment lets the public bind pass
    gallery = tmp_path / "absent.db"
    assert main(["serve", str(gallery), "--host", "0.0.0.0", "--port", "1"]) == 2
    assert f"gallery {gallery} does not exist" in capsys.readouterr().err


def test_non_positive_upload_limit_is_an_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "people.db"), "--max-upload-mb", "0"]) == 2
    assert "upload limit must be positive" in capsys.readouterr().err
