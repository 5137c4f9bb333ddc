"""Every route against the fake recognizer (tests/serve/fakes.py), so the routes, their response models and the
enrolment policy are tested where ../shared/data is absent."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from fastapi.testclient import TestClient

from marginface.serve import create_app

from .conftest import LOCAL
from .fakes import BLUE, GREEN, RED, THRESHOLD, YELLOW, colour_embedding, face, photo, wall

KEY = "route-key"


@pytest.fixture
def client(fake_gallery_path, fake_recognizer):
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer), base_url=LOCAL) as test_client:
        yield test_client


def _png(name: str, data: bytes) -> tuple[str, bytes, str]:
    return name, data, "image/png"


def _enrol(client: TestClient, name: str, *photos: tuple[str, bytes, str], **kwargs):
    return client.post("/v1/identities", data={"name": name}, files=[("images", p) for p in photos], **kwargs)


def test_the_fake_people_are_far_apart():
    for a, b in itertools.combinations([RED, GREEN, BLUE, YELLOW], 2):
        assert float(colour_embedding(a) @ colour_embedding(b)) < THRESHOLD - 0.1, (a, b)


def test_healthz_detect_and_embed(client, fake_recognizer):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["writable"] is True and health["write_problem"] is None
    assert health["model"] == fake_recognizer.fingerprint.key and (health["identities"], health["templates"]) == (0, 0)
    assert health["threshold"] == {"value": THRESHOLD, "source": "fixed"}

    two = photo((RED, 10, 10, 40), (BLUE, 70, 50, 20))
    detected = client.post("/v1/detect", files={"image": _png("two.png", two)}).json()
    assert detected["image"] == {"name": "two.png", "width": 120, "height": 100}
    assert [f["box"] for f in detected["faces"]] == [[10, 10, 40, 40], [70, 50, 20, 20]]  # main (largest) first
    assert len(detected["faces"][0]["landmarks"]) == 5 and "embedding" not in detected["faces"][0]
    assert client.post("/v1/detect", files={"image": _png("wall.png", wall())}).json()["faces"] == []

    main = client.post("/v1/embed", files={"image": _png("two.png", two)}).json()
    assert main["model"] == fake_recognizer.fingerprint.key and len(main["faces"]) == 1
    assert np.allclose(main["faces"][0]["embedding"], colour_embedding(RED), atol=1e-6)
    every = client.post("/v1/embed?all_faces=true", files={"image": _png("two.png", two)}).json()
    assert np.allclose(every["faces"][1]["embedding"], colour_embedding(BLUE), atol=1e-6)
    faceless = client.post("/v1/embed", files={"image": _png("wall.png", wall())})
    assert faceless.status_code == 422 and faceless.json() == {"detail": "wall.png: no face found"}


def test_verify_is_the_recognizers_decision_at_the_gallerys_threshold(client):
    same = client.post("/v1/verify", files={"image1": _png("a.png", face(RED, 30)),
                                            "image2": _png("b.png", face(RED, 50))}).json()
    assert same["same"] is True and same["score"] == pytest.approx(1.0, abs=1e-6)
    assert same["threshold"] == {"value": THRESHOLD, "source": "fixed"}
    assert same["image1"]["name"] == "a.png" and same["image2"]["box"] == [float(v) for v in (10 + 50 % 17, 8 + 50 % 13,
                                                                                              50, 50)]
    other = client.post("/v1/verify", files={"image1": _png("a.png", face(RED)),
                                             "image2": _png("b.png", face(GREEN))}).json()
    assert other["same"] is False and other["score"] < THRESHOLD
    for first, second, named in [(wall(), face(RED), "first.png"), (face(RED), wall(), "second.png")]:
        answer = client.post("/v1/verify", files={"image1": _png("first.png", first),
                                                  "image2": _png("second.png", second)})
        assert answer.status_code == 422 and answer.json()["detail"] == f"{named}: no face found"


def test_a_faceless_first_photo_is_refused_before_the_second_is_decoded(client, fake_recognizer):
    calls = fake_recognizer.calls
    answer = client.post("/v1/verify", files={"image1": _png("wall.png", wall()), "image2": _png("b.png", face(RED))})
    assert answer.status_code == 422 and fake_recognizer.calls == calls + 1


def test_enrol_identify_list_delete(client):
    enrolled = _enrol(client, "Red", _png("r1.png", face(RED, 30)), _png("r2.png", face(RED, 44)))
    assert enrolled.status_code == 201
    assert enrolled.json() == {"name": "Red", "added": 2, "duplicates": 0, "skipped": []}
    assert _enrol(client, "Red", _png("r1.png", face(RED, 30))).json()["duplicates"] == 1
    assert _enrol(client, "Blue", _png("b.png", face(BLUE))).status_code == 201

    group = photo((RED, 5, 5, 50), (GREEN, 70, 10, 30), (BLUE, 70, 60, 20))
    faces = client.post("/v1/identify?k=2", files={"image": _png("group.png", group)}).json()["faces"]
    assert [f["name"] for f in faces] == ["Red", "unknown", "Blue"]
    assert [f["known"] for f in faces] == [True, False, True]
    assert faces[0]["score"] == pytest.approx(1.0, abs=1e-6) and len(faces[0]["candidates"]) == 2
    assert faces[0]["candidates"][0] == {"name": "Red", "score": pytest.approx(1.0, abs=1e-6)}
    assert faces[0]["threshold"] == {"value": THRESHOLD, "source": "fixed"}

    listed = client.get("/v1/identities").json()
    assert listed["count"] == 2
    assert {p["name"]: p["templates"] for p in listed["identities"]} == {"Red": 2, "Blue": 1}
    assert all(p["created"] <= p["updated"] for p in listed["identities"])
    assert client.delete("/v1/identities/Red").json() == {"removed": "Red"}
    assert client.delete("/v1/identities/Red").status_code == 404
    again = client.post("/v1/identify", files={"image": _png("r.png", face(RED))}).json()["faces"][0]
    assert again["name"] == "unknown" and again["known"] is False


def test_identify_on_an_empty_gallery_scores_null(client):
    answer = client.post("/v1/identify", files={"image": _png("r.png", face(RED))}).json()["faces"][0]
    assert answer["name"] == "unknown" and answer["score"] is None and answer["candidates"] == []


def test_the_enrolment_policy_for_photos_without_a_face(client):
    """docs/recognition.md: a photo without a face is skipped and listed; nothing is enrolled for a person none of
    whose photos shows one (422, naming every photo)."""
    none = _enrol(client, "Red", _png("wall1.png", wall()), _png("wall2.png", wall()))
    assert none.status_code == 422
    assert none.json()["detail"] == ("nothing enrolled for 'Red': no photo shows a face (wall1.png: no face found; "
                                     "wall2.png: no face found)")
    assert client.get("/v1/identities").json()["count"] == 0
    some = _enrol(client, "Red", _png("wall1.png", wall()), _png("r.png", face(RED)))
    assert some.status_code == 201
    assert some.json() == {"name": "Red", "added": 1, "duplicates": 0,
                           "skipped": [{"photo": "wall1.png", "reason": "no face found"}]}
    group = _enrol(client, "Green", _png("group.png", photo((GREEN, 5, 5, 50), (BLUE, 70, 60, 20))))
    assert group.json()["added"] == 1  # the main face only: the bystander is not enrolled
    blue = client.post("/v1/identify", files={"image": _png("b.png", face(BLUE))}).json()["faces"][0]
    assert blue["name"] == "unknown"


def test_the_same_photo_under_another_name_is_409(client):
    assert _enrol(client, "Red", _png("r.png", face(RED))).status_code == 201
    refused = _enrol(client, "Mallory", _png("r.png", face(RED)))
    assert refused.status_code == 409 and "already enrolled as 'Red'" in refused.json()["detail"]
    assert client.post("/v1/identities?allow_shared_photo=true", data={"name": "Mallory"},
                       files=[("images", _png("r.png", face(RED)))]).json()["added"] == 1


def test_a_name_that_differs_from_an_enrolled_one_only_by_case_is_409(client):
    assert _enrol(client, "Red", _png("r.png", face(RED))).status_code == 201
    refused = _enrol(client, " RED ", _png("r2.png", face(RED, 46)))
    assert refused.status_code == 409
    assert ("'RED' reads the same as the existing person 'Red' (case, spacing" in refused.json()["detail"]
            and "enrol them under the existing spelling 'Red'" in refused.json()["detail"])
    more = _enrol(client, "Red", _png("r2.png", face(RED, 46)))  # the exact name: more photos of that person
    assert more.status_code == 201 and more.json()["added"] == 1
    assert [(i["name"], i["templates"]) for i in client.get("/v1/identities").json()["identities"]] == [("Red", 2)]


def test_parameters_and_fields_are_checked(client):
    assert client.post("/v1/identify?k=0", files={"image": _png("r.png", face(RED))}).status_code == 422
    assert client.post("/v1/identify?k=101", files={"image": _png("r.png", face(RED))}).status_code == 422
    missing = client.post("/v1/identities", files=[("images", _png("r.png", face(RED)))])
    assert missing.status_code == 422
    assert missing.json() == {"detail": "missing text field 'name' in the multipart form"}
    no_photo = client.post("/v1/identities", data={"name": "Red"}, files={"other": _png("r.png", face(RED))})
    assert no_photo.status_code == 422 and "'images'" in no_photo.json()["detail"]
    assert client.post("/v1/detect", json={"image": "x"}).status_code == 415


def test_the_key_and_the_declared_responses(fake_gallery_path, fake_recognizer):
    with TestClient(create_app(fake_gallery_path, api_key=KEY, recognizer=fake_recognizer), base_url=LOCAL) as client:
        assert client.get("/v1/identities").status_code == 401
        assert client.get("/v1/identities", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            success = [code for code in operation["responses"] if code.startswith("2")]
            assert len(success) == 1, (method, path)
            if path == "/v1/faces/{face_id}/thumbnail":  # the one answer that is not JSON: an image
                assert list(operation["responses"][success[0]]["content"]) == ["image/jpeg"]
            else:
                content = operation["responses"][success[0]]["content"]["application/json"]["schema"]
                assert content["$ref"].startswith("#/components/schemas/"), (method, path, content)  # a model
            assert "401" in operation["responses"] and {"ApiKey": []} in operation["security"]
    enrolled = schema["components"]["schemas"]["Enrolled"]
    assert set(enrolled["required"]) == {"name", "added", "duplicates", "skipped"}


def test_routes_read_the_service_through_a_dependency():
    """Issue 15: the routes live on a module-level APIRouter, not in closures of the app factory."""
    from marginface.serve.deps import get_service
    from marginface.serve.routes import router

    paths = {(route.path, method) for route in router.routes for method in route.methods}
    assert paths >= {("/healthz", "GET"), ("/v1/detect", "POST"), ("/v1/embed", "POST"), ("/v1/verify", "POST"),
                     ("/v1/identify", "POST"), ("/v1/identities", "GET"), ("/v1/identities", "POST"),
                     ("/v1/identities/{name:path}", "DELETE")}
    for route in router.routes:
        assert any(dep.call is get_service for dep in route.dependant.dependencies), route.path


def test_a_method_the_path_does_not_serve_is_405_listing_every_method_it_does(client):
    """Found by the fuzzer (test_fuzz.py): OPTIONS /v1/identities answered `Allow: GET` though POST is served."""
    answer = client.options("/v1/identities")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, POST"
    assert answer.json() == {"detail": "Method Not Allowed"}
    assert client.put("/v1/identities/Red").headers["allow"] == "DELETE"
    assert client.get("/nowhere").status_code == 404
