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
    assert "upload limit must be a positive, finite number of MiB, got 0.0" in capsys.readouterr().err


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("marginface: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_upload_limits_that_are_not_a_finite_size_are_refused_at_start(tmp_path, capsys):
    """The probes: inf was an OverflowError traceback, nan 'cannot convert float NaN', and 1e-9 started a service
    that answered 500 to everything."""
    for value, says in (("inf", "positive, finite number of MiB, got inf"), ("nan", "got nan"),
                        ("-1", "got -1.0"), ("1e-9", "1e-09 MiB is under one byte")):
        assert main(["serve", str(tmp_path / "people.db"), "--max-upload-mb", value]) == 2, value
        assert says in _one_error(capsys)


def test_a_port_outside_1_65535_is_one_error_line(tmp_path, capsys):
    """The probes: --port 99999 and -1 ended in OverflowError's traceback."""
    for port in ("99999", "-1", "0"):
        assert main(["serve", str(tmp_path / "people.db"), "--port", port]) == 2, port
        assert f"port must be an integer from 1 to 65535, got {port}" in _one_error(capsys)


def test_keep_thumbnails_is_an_option_off_by_default(monkeypatch):
    """`--keep-thumbnails` reaches create_app (uploaded faces' crops are stored only when asked for)."""
    import sys
    from types import SimpleNamespace

    import marginface.serve.server as server

    seen: dict = {}
    monkeypatch.setattr(server, "create_app", lambda *a, **kw: seen.update(kw) or object())
    monkeypatch.setattr(server, "_check_port_free", lambda host, port: None)
    monkeypatch.setitem(sys.modules, "uvicorn", SimpleNamespace(run=lambda *args, **kwargs: None))
    assert main(["serve", "g.db"]) == 0 and seen["keep_thumbnails"] is False
    assert main(["serve", "g.db", "--keep-thumbnails"]) == 0 and seen["keep_thumbnails"] is True
