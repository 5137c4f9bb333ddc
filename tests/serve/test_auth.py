"""ApiKeyGuard (both headers, missing, wrong, constant-time compare), the loopback bind check and BrowserGuard
(Host and Origin rules against DNS rebinding and cross-site writes)."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from marginface.serve.auth import ApiKeyGuard, BrowserGuard, check_bind, is_loopback, split_authority

KEY = "s3cret-key"


def _client(key: str | None) -> TestClient:
    app = FastAPI()

    @app.get("/thing", dependencies=[Depends(ApiKeyGuard(key))])
    async def thing() -> dict:
        return {"ok": True}

    return TestClient(app)


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"},
                                     {"authorization": f"bearer {KEY}"}])
def test_key_accepted_in_either_header(headers):
    assert _client(KEY).get("/thing", headers=headers).status_code == 200


@pytest.mark.parametrize("headers, message", [({}, "missing API key"), ({"X-API-Key": "nope"}, "wrong API key"),
                                              ({"Authorization": "Bearer nope"}, "wrong API key"),
                                              ({"Authorization": f"Basic {KEY}"}, "missing API key"),
                                              ({"X-API-Key": KEY + "x"}, "wrong API key")])
def test_missing_or_wrong_key_is_401(headers, message):
    response = _client(KEY).get("/thing", headers=headers)
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_no_key_configured_admits_everyone():
    assert _client(None).get("/thing").status_code == 200


def test_empty_key_is_refused():
    with pytest.raises(ValueError, match="empty"):
        ApiKeyGuard("  ")


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.5", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.10", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_non_loopback_bind_needs_a_key():
    with pytest.raises(ValueError, match="without an API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", KEY)
    check_bind("127.0.0.1", None)


def _guarded(base_url: str = "http://127.0.0.1:8000", **options) -> TestClient:
    app = FastAPI()

    @app.api_route("/thing", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def thing() -> dict:
        return {"ok": True}

    app.add_middleware(BrowserGuard, **{"api_key_required": False, **options})
    return TestClient(app, base_url=base_url)


@pytest.mark.parametrize("authority, parts", [("LocalHost:8000", ("localhost", "8000")), ("[::1]:80", ("::1", "80")),
                                              ("[::1]", ("::1", "")), ("127.0.0.1", ("127.0.0.1", "")),
                                              ("localhost.", ("localhost", "")), ("a.b:x", ("a.b:x", ""))])
def test_split_authority(authority, parts):
    assert split_authority(authority) == parts


@pytest.mark.parametrize("host, served", [("localhost", True), ("127.0.0.1:1", True), ("127.9.9.9", True),
                                          ("[::1]:8000", True), ("evil.example", False), ("localhost.evil.example",
                                                                                           False),
                                          ("127.0.0.1.nip.io", False), ("0.0.0.0", False), ("", False)])
def test_only_loopback_host_names_are_served_without_a_key(host, served):
    answer = _guarded().get("/thing", headers={"Host": host})
    assert answer.status_code == (200 if served else 400), answer.text


def test_allowed_hosts_and_origins_extend_the_rules():
    client = _guarded("http://faces.lan:8000", allowed_hosts=["faces.lan"], allowed_origins=["https://app.lan"])
    assert client.get("/thing").status_code == 200
    assert client.get("/thing", headers={"Host": "other.lan"}).status_code == 400
    assert client.post("/thing", headers={"Origin": "https://app.lan:443"}).status_code == 200
    assert client.post("/thing", headers={"Origin": "http://app.lan"}).status_code == 403  # scheme differs
    assert _guarded("http://x.example", allowed_hosts=["*"]).get("/thing").status_code == 200
    assert _guarded("http://x.example", api_key_required=True).get("/thing").status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_state_changing_requests_from_a_foreign_origin_are_403_reads_are_not(method):
    client = _guarded()
    for origin in ("http://evil.example", "null", "http://localhost:8000", "https://127.0.0.1:8000", "x"):
        answer = client.request(method, "/thing", headers={"Origin": origin})
        assert answer.status_code == 403 and origin in answer.json()["detail"], origin
    assert client.request(method, "/thing", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200
    assert client.request(method, "/thing").status_code == 200
    assert client.get("/thing", headers={"Origin": "http://evil.example"}).status_code == 200  # no CORS: unreadable


def test_refused_before_any_body_is_read():
    import asyncio

    received = []

    async def receive() -> dict:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 100, "more_body": False}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:  # pragma: no cover - must not be reached
        raise AssertionError("the app was called")

    guard = BrowserGuard(app, api_key_required=False)
    scope = {"type": "http", "method": "POST", "path": "/v1/identities",
             "headers": [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://evil.example")]}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 403 and received == []
