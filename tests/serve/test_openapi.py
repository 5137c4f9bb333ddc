"""The OpenAPI description holds what the service does (issue 16): every status a route answers is declared,
every error body is {"detail": str}, the API key is a declared security scheme, and /docs loads nothing from a
CDN (it is off)."""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marginface.serve import create_app

from .conftest import LOCAL, grey_png, upload

KEY = "k-0123"
COLIN = "Colin_Powell"


def _operation(schema: dict, method: str, url: str) -> dict:
    """The OpenAPI operation that `method url` reaches."""
    path = url.split("?")[0]
    for template, operations in schema["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", ".+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {url} is not in the OpenAPI description")


@pytest.fixture
def keyed(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, api_key=KEY, recognizer=recognizer, max_upload_mb=0.5),
                    base_url=LOCAL, headers={"X-API-Key": KEY}) as client:
        yield client


def test_the_api_key_is_a_declared_security_scheme_and_errors_have_one_shape(keyed):
    schema = keyed.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                 "description": "the service's API key"}
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    assert schema["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"
    for template, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"ApiKey": []} in operation["security"], (method, template)
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, template, code)
    assert keyed.get("/redoc").status_code == 404  # ReDoc would load its script from a CDN


def test_the_docs_page_loads_everything_from_the_service_itself(gallery_path, recognizer):
    import re

    with TestClient(create_app(gallery_path, recognizer=recognizer, api_key=KEY), base_url=LOCAL) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
        links = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: *'([^']+)'", page.text)
        assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json"} <= set(links)
        assert not [link for link in links if "//" in link], links  # no CDN, no other host: works offline
        for link in links:
            assert client.get(link, headers={"X-API-Key": KEY}).status_code == 200, link


def test_without_a_key_no_security_scheme_is_declared(gallery_path, recognizer):
    with TestClient(create_app(gallery_path, recognizer=recognizer), base_url=LOCAL) as client:
        schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert all("security" not in op for ops in schema["paths"].values() for op in ops.values())


def test_every_status_the_probes_get_is_declared_for_their_route(keyed, lfw):
    """The probes of issue 16, each checked against the route's declared responses and the error body shape."""
    face, other = upload(lfw(COLIN, 1)), upload(lfw("George_W_Bush", 1))
    assert keyed.post("/v1/identities", data={"name": "Colin"}, files=[("images", face)]).status_code == 201
    noise = Image.effect_noise((700, 700), 100).convert("RGB")
    big = io.BytesIO()
    noise.save(big, "PNG")
    probes = [
        ("GET", "/healthz", {}), ("GET", "/v1/identities", {}),
        ("GET", "/v1/identities", {"headers": {"X-API-Key": "wrong"}}),
        ("GET", "/v1/identities", {"headers": {"Host": "evil.example"}}),
        ("POST", "/v1/detect", {"files": {"image": ("line.png", grey_png(1, 20_000), "image/png")}}),
        ("POST", "/v1/detect", {"files": {"image": ("notes.txt", b"words", "text/plain")}}),
        ("POST", "/v1/detect", {"files": {"image": ("big.png", big.getvalue(), "image/png")}}),
        ("POST", "/v1/detect", {"json": {"image": "x"}}),
        ("POST", "/v1/embed", {"files": {"image": ("wall.png", grey_png(200, 200), "image/png")}}),
        ("POST", "/v1/embed", {"files": {"photo": face}}),
        ("POST", "/v1/verify", {"files": {"image1": face, "image2": ("wall.png", grey_png(200, 200), "image/png")}}),
        ("POST", "/v1/identify?k=0", {"files": {"image": face}}),
        ("POST", "/v1/identify?k=2", {"files": {"image": face}}),
        ("POST", "/v1/identify", {"files": {"image": face}, "headers": {"Origin": "http://evil.example"}}),
        ("POST", "/v1/identities", {"data": {"name": "Mallory"}, "files": [("images", face)]}),
        ("POST", "/v1/identities", {"data": {"name": "ｕｎｋｎｏｗｎ"}, "files": [("images", other)]}),
        ("POST", "/v1/identities", {"data": {"name": "Bush"}, "files": [("images", other)]}),
        ("DELETE", "/v1/identities/Nobody", {}), ("DELETE", "/v1/identities/%FF", {}),
        ("DELETE", "/v1/identities/Bush", {}),
    ]
    schema = keyed.get("/openapi.json").json()
    seen = set()
    for method, url, kwargs in probes:
        answer = keyed.request(method, url, **kwargs)
        declared = _operation(schema, method, url)["responses"]
        assert str(answer.status_code) in declared, (method, url, answer.status_code, sorted(declared))
        if answer.status_code >= 400:
            body = answer.json()
            assert set(body) == {"detail"} and isinstance(body["detail"], str), (method, url, body)
        seen.add(answer.status_code)
    assert seen >= {200, 201, 400, 401, 403, 404, 409, 413, 415, 422}
