"""API-key guard: the key arrives as `X-API-Key` or `Authorization: Bearer`, compared in constant time."""

from __future__ import annotations

import hmac
import ipaddress
import socket

from fastapi import HTTPException, Request, status


def presented_key(request: Request) -> str | None:
    """The key a request carries (X-API-Key wins over a Bearer token), or None when it carries none."""
    header = request.headers.get("x-api-key")
    if header:
        return header
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class ApiKeyGuard:
    """FastAPI dependency that admits a request only when it presents the configured key (no key: admits all)."""

    def __init__(self, api_key: str | None) -> None:
        if api_key is not None and not api_key.strip():
            raise ValueError("the API key is empty; give a non-empty key or none at all")
        self._key = api_key.encode("utf-8") if api_key else None

    @property
    def enabled(self) -> bool:
        """Whether requests must present a key."""
        return self._key is not None

    def __call__(self, request: Request) -> None:
        """Raise 401 when a key is configured and the request's key is missing or wrong."""
        if self._key is None:
            return
        given = presented_key(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="marginface"'}
        if given is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send it as X-API-Key or "
                                "'Authorization: Bearer <key>'", headers=challenge)
        if not hmac.compare_digest(given.encode("utf-8"), self._key):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong API key", headers=challenge)


def is_loopback(host: str) -> bool:
    """Whether binding `host` exposes the service to this machine only (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only when every address it resolves to is
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose face data beyond this machine without a key: non-loopback host and no key -> ValueError."""
    if not api_key and not is_loopback(host):
        raise ValueError(f"refusing to bind {host!r} without an API key: face data is biometric; give --api-key "
                         "or MARGINFACE_API_KEY, or bind 127.0.0.1")
