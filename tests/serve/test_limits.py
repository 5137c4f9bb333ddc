"""BodyLimitMiddleware: 413 from Content-Length, from the counted stream, 408 for a body that stops arriving, and
bodies within the limit intact."""

from __future__ import annotations

import asyncio
import json
import time

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


def _run(middleware: BodyLimitMiddleware, messages: list[dict], headers: list[tuple[bytes, bytes]]) -> list[dict]:
    """Drive `middleware` with one request whose body arrives as `messages`; the messages it sent back."""
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client sends nothing more

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    return sent


def _reading_app(seen: list[int]):
    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def test_lying_content_length_is_caught_while_streaming():
    """A client that declares 10 bytes and sends more is stopped by the count: the app never sees past the limit."""
    seen: list[int] = []
    messages = [{"type": "http.request", "body": b"z" * 600, "more_body": True},
                {"type": "http.request", "body": b"z" * 600, "more_body": False}]
    sent = _run(BodyLimitMiddleware(_reading_app(seen), max_bytes=LIMIT), messages, [(b"content-length", b"10")])
    assert seen == [600]
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]


def test_a_body_that_stops_arriving_is_408_after_the_timeout():
    """The probe: a request declaring more body than it sends held the connection with no timeout."""
    seen: list[int] = []
    messages = [{"type": "http.request", "body": b"z" * 100, "more_body": True}]
    middleware = BodyLimitMiddleware(_reading_app(seen), max_bytes=LIMIT, timeout_s=0.3)
    start = time.monotonic()
    sent = _run(middleware, messages, [(b"content-length", b"900")])
    assert time.monotonic() - start < 5
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert "got 100 bytes of the 900 declared" in json.loads(sent[1]["body"])["detail"]


def test_an_answer_before_the_body_is_read_closes_the_connection():
    """The API key is checked before the body is read; the unread rest must not be parsed as the next request."""
    async def refuse(scope, receive, send):
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    messages = [{"type": "http.request", "body": b"z" * 100, "more_body": True}]
    sent = _run(BodyLimitMiddleware(refuse, max_bytes=LIMIT), messages, [(b"content-length", b"900")])
    assert sent[0]["status"] == 401 and (b"connection", b"close") in sent[0]["headers"]


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        BodyLimitMiddleware(_echo_app(), max_bytes=0)


def test_timeout_must_be_positive_and_finite():
    for value in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="body timeout"):
            BodyLimitMiddleware(_echo_app(), max_bytes=LIMIT, timeout_s=value)
