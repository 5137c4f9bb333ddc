"""The answer the ASGI middlewares (auth, body limits) send themselves, before or instead of a route."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]  # ASGI's send (no starlette import needed)


async def refuse(send: Send, status: int, detail: str) -> None:
    """A JSON {"detail": ...} answer that closes the connection (the rest of the body is never read)."""
    payload = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
