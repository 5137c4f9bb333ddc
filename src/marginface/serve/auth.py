"""API-key guard (the key arrives as `X-API-Key` or `Authorization: Bearer`, compared in constant time) and the
browser guard against DNS rebinding and cross-site writes (Host and Origin checks, before any body is read)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Receive, Scope, Send

from marginface.errors import UsageError
from marginface.serve.refusal import refuse

log = logging.getLogger(__name__)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
            raise UsageError("the API key is empty; give a non-empty key or none at all")
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
        raise UsageError(f"refusing to bind {host!r} without an API key: face data is biometric; give --api-key "
                         "or MARGINFACE_API_KEY, or bind 127.0.0.1")


def split_authority(authority: str) -> tuple[str, str]:
    """(host lowercased, without brackets or a trailing dot; port or '') of a Host header or URL authority."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        return host, rest.removeprefix(":")
    host, colon, port = authority.rpartition(":")
    if colon and port.isdigit():
        return host.rstrip("."), port
    return authority.rstrip("."), ""


def is_loopback_name(host: str) -> bool:
    """Whether a Host header's name is this machine by definition: 'localhost' or a literal loopback address
    (127.0.0.0/8, ::1). Never resolved: a DNS-rebinding name resolves to 127.0.0.1 too, which is the attack."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """ASGI middleware refusing what a hostile web page can make a browser send, before the body is read.

    - Host: without an API key only loopback names (`is_loopback_name`, any port) are served, unless
      `allowed_hosts` names others ('*': any); a DNS-rebinding page's requests carry its own domain as Host,
      so it can neither read the gallery nor embed photos. 400 otherwise. With a key any Host is served
      (unless `allowed_hosts` is given): the key, which such a page does not have, guards the data.
    - Origin: a POST, PUT, PATCH or DELETE whose `Origin` header is present and is neither this service's own
      origin (the same host and port as the Host header) nor in `allowed_origins` is refused with 403. A web
      page can send a multipart form POST cross-site without any preflight, so without this any page the user
      visits could enrol or delete people. Requests without Origin (curl, scripts) pass; the API key, when
      configured, is still required of every request by ApiKeyGuard.
    """

    def __init__(self, app: ASGIApp, *, api_key_required: bool, allowed_hosts: Iterable[str] | None = None,
                 allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        if allowed_hosts is None:
            allowed_hosts = ["*"] if api_key_required else []
        self.any_host = "*" in allowed_hosts
        self.hosts = {split_authority(h)[0] for h in allowed_hosts if h != "*"}
        self.origins = {_origin(o) for o in allowed_origins}

    def host_allowed(self, host: str) -> bool:
        """Whether a request whose Host header names `host` (port ignored) is served."""
        name, _ = split_authority(host)
        return self.any_host or is_loopback_name(name) or name in self.hosts

    def origin_allowed(self, origin: str, host: str, scheme: str = "http") -> bool:
        """Whether a state-changing request from `origin` to this service, reached as `scheme`://`host`, is
        admitted: its own origin, or one of `allowed_origins`."""
        parts = urlsplit(origin.strip().lower())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # 'null' (sandboxed frames, file: pages) and anything unparsable
        return _origin(origin) in {_origin(f"{scheme}://{host}"), *self.origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check Host, then Origin for state-changing methods; pass everything else through untouched."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not host or not self.host_allowed(host):
            log.warning("refused a %s %s for Host %r", scope.get("method"), scope.get("path"), host)
            await refuse(send, status.HTTP_400_BAD_REQUEST,
                         f"Host {host!r} is not served: without an API key this service answers only to loopback "
                         "names (localhost, 127.0.0.1, [::1]); allow others with --allow-host")
            return
        origin = headers.get("origin")
        if scope.get("method", "").upper() in STATE_CHANGING and origin is not None \
                and not self.origin_allowed(origin, host, scope.get("scheme", "http")):
            log.warning("refused a cross-site %s %s from Origin %r", scope.get("method"), scope.get("path"), origin)
            await refuse(send, status.HTTP_403_FORBIDDEN,
                         f"cross-site request refused: Origin {origin!r} is not this service ({host}); "
                         "allow it with --allow-origin")
            return
        await self.app(scope, receive, send)


def _with_port(authority: str, default: str) -> str:
    """'host:port' with the default port filled in, for comparing an Origin with a Host header."""
    host, port = split_authority(authority)
    return f"[{host}]:{port or default}" if ":" in host else f"{host}:{port or default}"


def _origin(origin: str) -> str:
    """An origin as 'scheme://host:port', the form `allowed_origins` are compared in."""
    parts = urlsplit(origin.strip().lower())
    return f"{parts.scheme}://{_with_port(parts.netloc, '443' if parts.scheme == 'https' else '80')}"
