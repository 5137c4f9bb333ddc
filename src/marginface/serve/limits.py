"""Request-body limits as ASGI middleware: size (413 from Content-Length up front, or while counting the stream)
and time (408 when the body does not arrive in time), applied as the route reads the body, never before."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from marginface.serve.refusal import refuse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_BODY_TIMEOUT_S = 60.0


class BodyTooLarge(Exception):
    """The request body passed the limit (raised into the route's read, answered 413 by the middleware)."""


class BodyTimeout(Exception):
    """The request body did not arrive in time (raised into the route's read, answered 408 by the middleware)."""


class BodyLimitMiddleware:
    """Bound every request body to `max_bytes` and `timeout_s` seconds, counting as the route reads it.

    A declared Content-Length over the limit is refused with 413 before anything is read. Otherwise nothing is
    read ahead: the route's dependencies run first (the API key is checked before a byte of the body is
    read), and the body is counted chunk by chunk as the route reads it (a lying or absent Content-Length,
    chunked uploads): past the limit the read raises and the answer is 413, so no route ever parses more
    than the limit. A body that has not fully arrived `timeout_s` after its first read (a client declaring
    more than it sends, a slow-loris upload) gets 408. Any answer sent before the whole body arrived closes
    the connection, so an unread body can never be taken for the next request.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the upload limit must be positive, got {max_bytes} bytes")
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"the body timeout must be a positive number of seconds, got {timeout_s}")
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass non-HTTP traffic through; count, time and bound every HTTP request body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await refuse(send, 413, f"request body of {declared} bytes is over the {self._limit_text()} limit")
            return
        total = 0
        complete = False
        deadline: float | None = None
        started = False

        async def counted() -> Message:
            nonlocal total, complete, deadline
            if complete:
                return await receive()  # after the body: wait for http.disconnect like a plain receive would
            if deadline is None:
                deadline = time.monotonic() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request":
                complete = True
                return message
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                raise BodyTooLarge
            complete = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not complete:  # the rest of the body is never read: this connection cannot be reused
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, closing_send)
        except BodyTooLarge:
            if started:
                raise
            await refuse(send, 413, f"request body is over the {self._limit_text()} limit")
        except BodyTimeout:
            if started:
                raise
            await refuse(send, 408, f"request body not received within {self.timeout_s:g} s (got {total} bytes"
                         + (f" of the {declared} declared)" if declared is not None else ")"))

    def _limit_text(self) -> str:
        mib = self.max_bytes / (1024 * 1024)
        return f"{mib:g} MiB ({self.max_bytes} bytes)"


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length, or None when absent or unparsable."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
