"""BodyLimitMiddleware: 413 from Content-Length, from the counted stream, and bodies within the limit intact."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from marginface.serve.limits import BodyLimitMiddleware

LIMIT = 1000


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        body = await request.body()
        return {"received": len(body)}

    app.add_middleware(BodyLimitMiddleware, max_bytes=LIMIT)
    return app


def test_body_within_limit_reaches_the_route_intact():
    with TestClient(_echo_app()) as client:
        response = client.post("/echo", content=b"x" * LIMIT)
    assert response.status_code == 200
    assert response.json() == {"received": LIMIT}


def test_declared_content_length_over_limit_is_413():
    with TestClient(_echo_app()) as client:
        response = client.post("/echo", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert f"{LIMIT + 1} bytes" in response.json()["detail"]


def test_chunked_body_without_content_length_is_counted():
    def chunks():
        for _ in range(5):
            yield b"y" * 300

    with TestClient(_echo_app()) as client:
        response = client.post("/echo", content=chunks())
    assert response.status_code == 413
    assert "over the" in response.json()["detail"]


def test_lying_content_length_is_caught_while_streaming():
    """A client that declares 10 bytes and sends more is stopped by the count, and the app never runs."""
    reached = []

    async def app(scope, receive, send):
        reached.append(True)

    middleware = BodyLimitMiddleware(app, max_bytes=LIMIT)
    messages = [{"type": "http.request", "body": b"z" * 600, "more_body": True},
                {"type": "http.request", "body": b"z" * 600, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"10")]}
    asyncio.run(middleware(scope, receive, send))
    assert not reached
    assert sent[0]["status"] == 413


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        BodyLimitMiddleware(_echo_app(), max_bytes=0)
