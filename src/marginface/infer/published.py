"""model='auto': the published MobileFaceNet + YuNet pair, fetched once into the user cache (sha256 pinned),
with operating thresholds calibrated by `marginface eval` and shipped in published.json."""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.request
from importlib import resources
from pathlib import Path

from marginface.errors import InputError
from marginface.fileio import sha256_file
from marginface.infer.thresholds import published_threshold  # noqa: F401 - re-exported, defined beside Threshold

log = logging.getLogger(__name__)

MIRROR_ENV = "MARGINFACE_MODEL_MIRROR"


def published() -> dict:
    """The shipped description of the auto models and their calibrated thresholds."""
    return json.loads(resources.files("marginface.infer").joinpath("published.json").read_text())


def resolve_model(kind: str, cache_dir: str | Path | None = None, mirror: str | None = None) -> Path:
    """Local path of the published 'model' or 'detector', downloaded once and checked against its sha256.

    `mirror` (or $MARGINFACE_MODEL_MIRROR), a URL prefix such as file:///data, replaces the published
    location: the file is then fetched from mirror + '/' + its mirror_path (offline installs and tests).
    """
    entries = published()
    if kind not in ("model", "detector"):
        raise ValueError(f"unknown published kind {kind!r}; expected 'model' or 'detector'")
    entry = entries[kind]
    mirror = mirror or os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{entry['mirror_path']}" if mirror else entry["url"]
    return fetch_model(url, entry["sha256"], cache_dir, name=Path(entry["url"]).name)  # one cache name, mirror or not


def fetch_model(url: str, sha256: str, cache_dir: str | Path | None = None, name: str | None = None) -> Path:
    """Download `url` once into the cache (default ~/.cache/marginface) as `name` (default: the URL's file
    name) and verify its sha256.

    A cached file with the right hash is reused without any network access.
    """
    cache = Path(cache_dir or os.environ.get("MARGINFACE_CACHE", Path.home() / ".cache" / "marginface"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / (name or Path(url).name)
    if target.is_file() and sha256_file(target) == sha256:
        return target
    tmp = target.with_suffix(target.suffix + ".part")
    log.info("downloading %s to %s", url, target)
    try:
        response = urllib.request.urlopen(url)  # noqa: S310 - user-given model URL
    except OSError as err:  # URLError is one: no network, unknown host, refused, HTTP error
        reason = getattr(err, "reason", err)
        raise OSError(f"cannot download {url} ({reason}); offline, copy that file (sha256 {sha256}) to {target} "
                      f"or set MARGINFACE_CACHE to a folder holding it") from err
    try:  # a local failure (full disk, no permission) keeps its own message, which names the file
        with response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    found = sha256_file(tmp)
    if found != sha256:
        tmp.unlink()
        raise InputError(f"{url}: sha256 {found} does not match the expected {sha256}")
    tmp.replace(target)
    return target
