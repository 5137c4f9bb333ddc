"""ApiKeyGuard (both headers, missing, wrong, constant-time compare) and the loopback bind check."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from marginface.serve.auth import ApiKeyGuard, check_bind, is_loopback

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
