"""Run the app under uvicorn after checking that the bind is safe for biometric data."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from marginface.errors import UsageError
from marginface.serve.app import create_app
from marginface.serve.auth import check_bind
from marginface.serve.limits import DEFAULT_BODY_TIMEOUT_S

log = logging.getLogger(__name__)


def serve(gallery_path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_upload_mb: float = 10.0, allowed_hosts: Sequence[str] | None = None,
          allowed_origins: Sequence[str] = (), body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
          keep_thumbnails: bool = False) -> None:
    """Load the model and gallery once and serve until interrupted; ValueError for a non-loopback bind without key."""
    import uvicorn

    check_bind(host, api_key)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"port must be an integer from 1 to 65535, got {port}")
    _check_port_free(host, port)
    app = create_app(gallery_path, api_key=api_key, max_upload_mb=max_upload_mb, allowed_hosts=allowed_hosts,
                     allowed_origins=allowed_origins, body_timeout_s=body_timeout_s, keep_thumbnails=keep_thumbnails)
    log.info("serving %s on http://%s:%d (API key %s)", gallery_path, host, port, "required" if api_key else "off")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _check_port_free(host: str, port: int) -> None:
    """OSError naming host:port when it cannot be bound (in use, not permitted), before the model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
