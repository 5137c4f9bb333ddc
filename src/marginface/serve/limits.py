"""Request-body size limit as ASGI middleware: 413 from Content-Length up front, or while counting the stream."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body passed the limit (raised inside the middleware only)."""


class BodyLimitMiddleware:
    """Reject request bodies over `max_bytes` with 413 before any of them reaches a route.

    A declared Content-Length over the limit is refused without reading; otherwise the body is read and
    counted chunk by chunk (a lying or absent Content-Length, chunked uploads) and, once within the limit,
    replayed to the app, so no route ever parses more than the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the upload limit must be positive, got {max_bytes} bytes")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass non-HTTP traffic through; count and bound every HTTP request body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"request body of {declared} bytes is over the {self._limit_text()} limit")
            return
        try:
            chunks, more_body = await self._read(receive)
        except BodyTooLarge:
            await self._refuse(send, f"request body is over the {self._limit_text()} limit")
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more_body}
            return await receive()  # after the body: wait for http.disconnect like a plain receive would

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> tuple[list[bytes], bool]:
        """Read the whole body, raising BodyTooLarge as soon as the count passes the limit."""
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return chunks, False
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks, False

    def _limit_text(self) -> str:
        mib = self.max_bytes / (1024 * 1024)
        return f"{mib:g} MiB ({self.max_bytes} bytes)"

    @staticmethod
    async def _refuse(send: Send, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length, or None when absent or unparsable."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
