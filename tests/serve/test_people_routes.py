"""The people routes (issue 18) against the fake recognizer: clusters made through the library (add_faces, then
apply_clustering with chosen labels), each route a shell over People, errors through the one handler, every
write route behind the key and the Origin check, uploads of photos of unnamed people, thumbnails."""

from __future__ import annotations

import contextlib
import functools
import io
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marginface.infer.gallery import Gallery
from marginface.infer.people import People
from marginface.serve import create_app

from .conftest import LOCAL
from .fakes import BLUE, GREEN, RED, YELLOW, face, photo, store_photo, wall

KEY = "people-key"


def _png(name: str, data: bytes) -> tuple[str, bytes, str]:
    return name, data, "image/png"


@pytest.fixture
def clustered(fake_gallery_path: Path, fake_recognizer) -> dict:
    """Two clusters made through the library: red (three photos, plus a green bystander put there by the run)
    and blue (two photos, stored without thumbnails). Returns the cluster refs and face ids."""
    with Gallery.open(fake_gallery_path) as gallery:
        people = People(gallery)
        red = [store_photo(people, fake_recognizer, f"red{i}.png", face(RED, 30 + 6 * i))[0] for i in range(3)]
        group = store_photo(people, fake_recognizer, "group.png", photo((RED, 5, 5, 50), (GREEN, 70, 10, 30)))
        blue = [store_photo(people, fake_recognizer, f"blue{i}.png", face(BLUE, 32 + 5 * i), thumbnails=False)[0]
                for i in range(2)]
        ids = [*red, *group, *blue]
        people.apply_clustering(ids, [0, 0, 0, 0, 0, 1, 1])  # the bystander (green) is wrongly in red's cluster
        red_ref, blue_ref = (people.faces([f])[0].person.ref for f in (red[0], blue[0]))
    return {"red": red_ref, "blue": blue_ref, "red_faces": [*red, group[0]], "green": group[1], "blue_faces": blue}


@pytest.fixture
def client(fake_gallery_path, fake_recognizer, clustered):
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer), base_url=LOCAL) as test_client:
        yield test_client


def _path(ref: str) -> str:
    return "/v1/people/" + quote(ref, safe="")


def test_people_are_listed_and_shown_with_their_faces(client, clustered):
    listed = client.get("/v1/people").json()
    assert listed["count"] == 2 and listed["thumbnails_kept"] is False
    assert [(p["ref"], p["kind"], p["faces"]) for p in listed["people"]] == [
        (clustered["red"], "cluster", 5), (clustered["blue"], "cluster", 2)]  # largest first
    assert listed["counts"] == {"photos": 6, "faces": 7, "unassigned": 0, "without_embedding": 0, "named": 0,
                                "clusters": 2}
    red = client.get(_path(clustered["red"])).json()
    assert red["ref"] == clustered["red"] and red["name"] is None and red["user_faces"] == 0
    assert sorted(f["id"] for f in red["face_records"]) == sorted([*clustered["red_faces"], clustered["green"]])
    record = next(f for f in red["face_records"] if f["id"] == clustered["red_faces"][0])
    assert record["photo_path"] == "/photos/red0.png" and record["assigned_by"] == "auto"
    assert record["has_thumbnail"] is True and record["person"] == clustered["red"] and len(record["box"]) == 4
    assert red["not_faces"] == []
    # '@' may be sent as is or URL-encoded
    assert client.get("/v1/people/" + clustered["red"]).json()["id"] == red["id"]


def test_the_people_list_and_its_counts_come_from_one_snapshot(client, clustered, fake_gallery_path,
                                                               fake_recognizer, monkeypatch):
    """A photo stored by another process between the listing's reads made `people` and `counts` disagree."""
    infos = People._infos

    def commit_after(self, db, persons):
        read = infos(self, db, persons)
        with Gallery.open(fake_gallery_path) as other:
            store_photo(People(other), fake_recognizer, "late.png", face(YELLOW, 40))
        return read

    monkeypatch.setattr(People, "_infos", commit_after)
    listed = client.get("/v1/people").json()
    monkeypatch.undo()
    assert sum(p["faces"] for p in listed["people"]) + listed["counts"]["unassigned"] == listed["counts"]["faces"]
    assert listed["counts"]["faces"] == 7 and client.get("/v1/people").json()["counts"]["faces"] == 8


def test_thumbnails_are_jpeg_and_404_when_not_kept(client, clustered):
    thumb = client.get(f"/v1/faces/{clustered['red_faces'][0]}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and image.size == (112, 112)
    missing = client.get(f"/v1/faces/{clustered['blue_faces'][0]}/thumbnail")
    assert missing.status_code == 404 and "has no thumbnail" in missing.json()["detail"]
    unknown = client.get("/v1/faces/999999/thumbnail")
    assert unknown.status_code == 404 and "has no face 999999" in unknown.json()["detail"]
    assert client.get("/v1/faces/0/thumbnail").status_code == 422
    assert client.get(f"/v1/faces/{2**63}/thumbnail").status_code == 422


def test_name_a_cluster_then_identify_answers_with_the_name(client, clustered):
    before = client.post("/v1/identify", files={"image": _png("new.png", face(RED, 47))}).json()["faces"][0]
    assert before["name"] == "unknown"  # faces of unnamed clusters are never searched
    named = client.post("/v1/people:name", json={"ref": clustered["red"], "name": " Ruby Red "})
    assert named.status_code == 200
    assert named.json()["person"] == {"ref": "Ruby Red", "kind": "named", "id": named.json()["person"]["id"],
                                      "name": "Ruby Red"}
    after = client.post("/v1/identify", files={"image": _png("new.png", face(RED, 47))}).json()["faces"][0]
    assert after["name"] == "Ruby Red" and after["known"] is True
    assert client.get(_path(clustered["red"])).status_code == 404  # the cluster became the named person
    shown = client.get(_path("Ruby Red")).json()
    assert shown["kind"] == "named" and shown["user_faces"] == 5 and shown["templates"] == 5
    assert "Ruby Red" in [i["name"] for i in client.get("/v1/identities").json()["identities"]]
    # rename; a name with a space and a slash is addressed URL-encoded
    renamed = client.post("/v1/people:name", json={"ref": "Ruby Red", "name": "Ruby/Red II"}).json()["person"]
    assert renamed["ref"] == "Ruby/Red II"
    assert client.get(_path("Ruby/Red II")).json()["faces"] == 5
    assert client.get("/v1/people/Ruby/Red%20II").json()["faces"] == 5  # a raw '/' works too
    # naming the other cluster with that name merges it into them
    merged = client.post("/v1/people:name", json={"ref": clustered["blue"], "name": "Ruby/Red II"}).json()["person"]
    assert merged["ref"] == "Ruby/Red II" and client.get(_path("Ruby/Red II")).json()["faces"] == 7


def test_a_person_called_like_a_method_is_still_a_person(client, clustered):
    """The changes are collection methods (`/v1/people:merge`), so no name can shadow them or be shadowed."""
    for name, face_id in zip(["merge", "a/name", "x:merge"], clustered["red_faces"], strict=False):
        ref = client.post("/v1/people:split", json={"faces": [face_id], "into": None}).json()["person"]["ref"]
        assert client.post("/v1/people:name", json={"ref": ref, "name": name}).json()["person"]["ref"] == name
        assert client.get(_path(name)).json()["faces"] == 1
        assert client.delete(_path(name)).json()["person"] == name


def test_names_the_gallery_refuses_are_422(client, clustered):
    for name, says in [("@12", "@ID addresses clusters"), ("unknown", "reads as 'unknown'"), ("a\tb", "control")]:
        answer = client.post("/v1/people:name", json={"ref": clustered["red"], "name": name})
        assert answer.status_code == 422 and says in answer.json()["detail"], name
    assert client.post("/v1/people:name", json={"ref": clustered["red"], "name": ""}).status_code == 422
    assert client.post("/v1/people:name", json={"ref": clustered["red"]}).status_code == 422
    assert client.post("/v1/people:name", content=b"not json",
                       headers={"content-type": "application/json"}).status_code == 422


def test_a_name_that_differs_from_someones_only_by_case_or_spacing_is_409(client, clustered):
    assert client.post("/v1/people:name", json={"ref": clustered["blue"], "name": "Ruby"}).status_code == 200
    answer = client.post("/v1/people:name", json={"ref": clustered["red"], "name": " ruby "})
    assert answer.status_code == 409
    assert "'ruby' reads the same as the existing person 'Ruby' (case" in answer.json()["detail"]
    assert client.get(_path(clustered["red"])).json()["kind"] == "cluster"  # nothing was changed


def test_homoglyph_invisible_and_blank_names_are_refused_over_http(client, clustered):
    assert client.post("/v1/people:name", json={"ref": clustered["blue"], "name": "Ruby"}).status_code == 200
    for look_alike in ["R\u057dby", "Ruby\u3164", "Rub\u0443", "\uff32uby", "Ruby\u2800"]:
        answer = client.post("/v1/people:name", json={"ref": clustered["red"], "name": look_alike})
        assert answer.status_code == 409, look_alike
        assert "reads the same as the existing person 'Ruby'" in answer.json()["detail"]
    for blank, says in [("\u3164", "only invisible characters"), ("\u2800", "only invisible characters"),
                        ("\u034f", "only invisible characters"), ("unknown\u3164", "reads as 'unknown'")]:
        answer = client.post("/v1/people:name", json={"ref": clustered["red"], "name": blank})
        assert answer.status_code == 422 and says in answer.json()["detail"], blank
    assert client.get(_path(clustered["red"])).json()["kind"] == "cluster"  # nothing was changed


def test_not_this_person_takes_a_face_out_and_is_respected(client, clustered):
    red = clustered["red"]
    answer = client.post("/v1/people:not", json={"ref": red, "faces": [clustered["green"]]})
    assert answer.status_code == 200
    assert answer.json() == {"person": {"ref": red, "kind": "cluster", "id": int(red[1:]), "name": None},
                             "taken_out": [clustered["green"]]}
    shown = client.get(_path(red)).json()
    assert shown["faces"] == 4 and shown["not_faces"] == [clustered["green"]]
    assert client.get("/v1/people").json()["counts"]["unassigned"] == 1
    conflict = client.post("/v1/people:split", json={"faces": [clustered["green"]], "into": red})
    assert conflict.status_code == 409 and f"was marked 'not {red}'" in conflict.json()["detail"]
    # a face marked 'not' the blue cluster cannot be merged into it either
    blue = clustered["blue"]
    marked = client.post("/v1/people:not", json={"ref": blue, "faces": [clustered["red_faces"][0]]})
    assert marked.json()["taken_out"] == []
    assert client.post("/v1/people:merge", json={"a": red, "b": blue}).status_code == 409
    assert client.post("/v1/people:not", json={"ref": red, "faces": [999999]}).status_code == 404
    assert client.post("/v1/people:not", json={"ref": red, "faces": []}).status_code == 422


def test_merge_and_split(client, clustered):
    red, blue = clustered["red"], clustered["blue"]
    merged = client.post("/v1/people:merge", json={"a": blue, "b": red})
    assert merged.status_code == 200 and merged.json()["person"]["ref"] == blue  # neither named: `a` is kept
    assert client.get(_path(red)).status_code == 404 and client.get(_path(blue)).json()["faces"] == 7
    itself = client.post("/v1/people:merge", json={"a": blue, "b": blue})
    assert itself.status_code == 422 and "with itself" in itself.json()["detail"]
    nobody = client.post("/v1/people:merge", json={"a": blue, "b": "Nobody"})
    assert nobody.status_code == 404 and "(clusters are addressed as @ID)" in nobody.json()["detail"]

    split = client.post("/v1/people:split", json={"faces": clustered["blue_faces"]})
    new = split.json()["person"]
    assert split.status_code == 200 and new["kind"] == "cluster" and new["ref"] not in (red, blue)
    assert client.get(_path(new["ref"])).json()["user_faces"] == 2
    client.post("/v1/people:name", json={"ref": new["ref"], "name": "Bleu"})
    into = client.post("/v1/people:split", json={"faces": [clustered["green"]], "into": "Bleu"}).json()["person"]
    assert into["ref"] == "Bleu" and client.get(_path("Bleu")).json()["faces"] == 3
    assert client.post("/v1/people:split", json={"faces": [0]}).status_code == 422
    assert client.post("/v1/people:split", json={"faces": [999999]}).status_code == 404


def test_remove_a_person_with_their_faces(client, clustered):
    gone = client.delete(_path(clustered["blue"]))
    assert gone.status_code == 200 and gone.json() == {"person": clustered["blue"], "faces": 2, "templates": 0}
    assert client.delete(_path(clustered["blue"])).status_code == 404
    client.post("/v1/people:name", json={"ref": clustered["red"], "name": "Ruby"})
    assert client.delete(_path("Ruby")).json() == {"person": "Ruby", "faces": 5, "templates": 5}
    assert client.get("/v1/people").json()["counts"] == {"photos": 6, "faces": 0, "unassigned": 0,
                                                         "without_embedding": 0, "named": 0, "clusters": 0}


def test_unknown_and_out_of_range_references_are_404(client):
    for ref in ["@999999", f"@{2**70}", "Nobody", "", "@"]:
        assert client.get(_path(ref)).status_code == 404, ref
        assert client.delete(_path(ref)).status_code == 404, ref
    assert client.post("/v1/people:split", json={"faces": [1], "into": f"@{2**64}"}).status_code == 404


def test_uploaded_photos_become_unassigned_face_records(fake_gallery_path, fake_recognizer, clustered):
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer), base_url=LOCAL) as client:
        files = [("images", _png("y.png", face(YELLOW, 40))), ("images", _png("wall.png", wall())),
                 ("images", _png("two.png", photo((YELLOW, 5, 5, 50), (GREEN, 70, 10, 30))))]
        added = client.post("/v1/faces", files=files)
        assert added.status_code == 201
        body = added.json()
        assert body["faces"] == 3 and body["known"] == 0 and body["without_face"] == ["wall.png"]
        assert body["thumbnails_kept"] is False and body["clustering"] is None
        assert [(p["photo"], len(p["face_ids"]), p["known"]) for p in body["photos"]] == [
            ("y.png", 1, False), ("wall.png", 0, False), ("two.png", 2, False)]
        assert client.get("/v1/people").json()["counts"]["unassigned"] == 3  # until a clustering run
        new = body["photos"][0]["face_ids"][0]
        assert client.get(f"/v1/faces/{new}/thumbnail").status_code == 404  # not kept by default
        again = client.post("/v1/faces", files=[("images", _png("y-copy.png", face(YELLOW, 40)))]).json()
        assert again["known"] == 1 and again["faces"] == 0
        split = client.post("/v1/people:split", json={"faces": [new]}).json()["person"]
        record = client.get(_path(split["ref"])).json()["face_records"][0]
        assert record["photo_path"] == "upload:y.png" and record["has_thumbnail"] is False
        assert client.post("/v1/faces", files=[("other", _png("y.png", face(YELLOW)))]).status_code == 422
        before = client.get("/v1/people").json()["counts"]["faces"]
        bad = client.post("/v1/faces", files=[("images", _png("g.png", face(GREEN, 50))),
                                              ("images", ("junk.png", b"not an image", "image/png"))])
        assert bad.status_code in (400, 415) and "junk.png" in bad.json()["detail"]
        assert client.get("/v1/people").json()["counts"]["faces"] == before  # the good photo before it: not stored
        assert client.post("/v1/faces", json={"images": []}).status_code == 415
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer, keep_thumbnails=True),
                    base_url=LOCAL) as client:
        assert client.get("/v1/people").json()["thumbnails_kept"] is True
        kept = client.post("/v1/faces", files=[("images", _png("b.png", face(BLUE, 61)))]).json()
        assert kept["thumbnails_kept"] is True
        thumb = client.get(f"/v1/faces/{kept['photos'][0]['face_ids'][0]}/thumbnail")
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (112, 112)


def test_uploads_to_a_clustered_gallery_are_placed_with_its_stored_cut(fake_gallery_path, fake_recognizer,
                                                                         clustered):
    from marginface.infer.organise import organise
    from marginface.infer.thresholds import Threshold

    with Gallery.open(fake_gallery_path) as gallery:  # the first run (as `marginface cluster`) stores the cut
        organise(People(gallery), threshold=Threshold.fixed(0.5))
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer), base_url=LOCAL) as client:
        body = client.post("/v1/faces", files=[("images", _png("red9.png", face(RED, 44))),
                                                ("images", _png("y.png", face(YELLOW, 40)))]).json()
        report = body["clustering"]
        assert report["mode"] == "incremental" and report["considered"] == 2
        assert report["settings"]["threshold"]["value"] == 0.5
        red_face, yellow_face = (p["face_ids"][0] for p in body["photos"])
        red = client.get(_path(clustered["red"])).json()
        assert red_face in [f["id"] for f in red["face_records"]]  # joined the red cluster
        assert client.get("/v1/people").json()["counts"]["unassigned"] == 0  # yellow: a new cluster of its own
        assert yellow_face not in [f["id"] for f in red["face_records"]]


def test_an_empty_gallery_has_no_unassigned_faces(fake_gallery_path, fake_recognizer):
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer), base_url=LOCAL) as client:
        answer = client.get("/v1/faces/unassigned")
    assert answer.status_code == 200
    assert answer.json() == {"faces": [], "total": 0, "without_embedding": 0, "next_after": None,
                             "thumbnails_kept": False}


def test_unassigned_faces_are_listed_by_id_a_page_at_a_time(client, clustered, fake_gallery_path):
    assert client.get("/v1/faces/unassigned").json()["total"] == 0  # every face is in a cluster
    client.post("/v1/people:not", json={"ref": clustered["red"], "faces": [clustered["green"]]})
    added = client.post("/v1/faces", files=[("images", _png(f"y{i}.png", face(YELLOW, 30 + 5 * i)))
                                            for i in range(3)]).json()
    new = [i for p in added["photos"] for i in p["face_ids"]]
    everyone = sorted([clustered["green"], *new])
    listed = client.get("/v1/faces/unassigned").json()
    assert [f["id"] for f in listed["faces"]] == everyone and listed["total"] == 4 and listed["next_after"] is None
    green = listed["faces"][0]
    assert green["person"] is None and green["photo_path"] == "/photos/group.png" and green["has_thumbnail"]
    assert listed["faces"][1]["photo_path"].startswith("upload:") and not listed["faces"][1]["has_thumbnail"]
    # pages of two, by id; `next_after` leads on, and the last page says there is none
    first = client.get("/v1/faces/unassigned?limit=2").json()
    assert [f["id"] for f in first["faces"]] == everyone[:2] and first["next_after"] == everyone[1]
    second = client.get(f"/v1/faces/unassigned?limit=2&after={first['next_after']}").json()
    assert [f["id"] for f in second["faces"]] == everyone[2:] and second["next_after"] is None
    assert second["total"] == 4
    assert client.get(f"/v1/faces/unassigned?after={everyone[-1]}").json()["faces"] == []
    # a face placed with :split leaves the list
    client.post("/v1/people:split", json={"faces": [new[0]], "into": clustered["blue"]})
    assert [f["id"] for f in client.get("/v1/faces/unassigned").json()["faces"]] == [clustered["green"], *new[1:]]
    # a face without an embedding (its photo gone at a reembed) is out of clustering: counted, not listed
    with contextlib.closing(sqlite3.connect(fake_gallery_path)) as db, db:  # as `gallery reembed` leaves it
        db.execute("UPDATE faces SET embedding = NULL, checksum = NULL WHERE id = ?", (new[2],))
    rest = client.get("/v1/faces/unassigned").json()
    assert [f["id"] for f in rest["faces"]] == [clustered["green"], new[1]]
    assert rest["total"] == 2 and rest["without_embedding"] == 1


def test_bad_listing_parameters_are_422_naming_them(client):
    for query, says in [("limit=0", "query limit: Input should be greater than or equal to 1"),
                        ("limit=501", "query limit: Input should be less than or equal to 500"),
                        ("limit=ten", "query limit: Input should be a valid integer"),
                        ("after=-1", "query after: Input should be greater than or equal to 0"),
                        (f"after={2**63}", "query after: Input should be less than or equal to")]:
        answer = client.get(f"/v1/faces/unassigned?{query}")
        assert answer.status_code == 422 and answer.json()["detail"].startswith(says), (query, answer.json())
    assert client.get("/v1/faces/unassigned?limit=500").status_code == 200


WRITES = [("POST", "/v1/people:name", {"json": {"ref": "{red}", "name": "Ruby"}}),
          ("POST", "/v1/people:merge", {"json": {"a": "{red}", "b": "{blue}"}}),
          ("POST", "/v1/people:split", {"json": {"faces": ["{face}"]}}),
          ("POST", "/v1/people:not", {"json": {"ref": "{red}", "faces": ["{face}"]}}),
          ("DELETE", "/v1/people/{blue}", {}),
          ("POST", "/v1/faces", {"files": [("images", ("y.png", face(YELLOW), "image/png"))]})]


def _fill(value, clustered: dict):
    """The request template with the fixture's refs and face ids filled in."""
    if isinstance(value, dict):
        return {k: _fill(v, clustered) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, clustered) for v in value]
    if value == "{face}":
        return clustered["red_faces"][0]
    if isinstance(value, str):
        return value.replace("{red}", quote(clustered["red"], safe="")).replace(
            "{blue}", quote(clustered["blue"], safe="")) if value.startswith("/") else value.format(**clustered)
    return value


@pytest.mark.parametrize("method, url, kwargs", WRITES, ids=[f"{m} {u}" for m, u, _ in WRITES])
def test_every_write_route_needs_the_key_and_refuses_a_foreign_origin(fake_gallery_path, fake_recognizer,
                                                                      clustered, method, url, kwargs):
    url, kwargs = _fill(url, clustered), _fill(kwargs, clustered)
    app = create_app(fake_gallery_path, api_key=KEY, recognizer=fake_recognizer)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.request(method, url, **kwargs).status_code == 401
        assert client.request(method, url, headers={"X-API-Key": "wrong"}, **kwargs).status_code == 401
        foreign = client.request(method, url, headers={"X-API-Key": KEY, "Origin": "http://evil.example"}, **kwargs)
        assert foreign.status_code == 403 and "cross-site request refused" in foreign.json()["detail"]
        assert client.get("/v1/people", headers={"X-API-Key": KEY}).json()["counts"]["faces"] == 7  # untouched
        own = client.request(method, url, headers={"X-API-Key": KEY, "Origin": LOCAL}, **kwargs)
        assert own.status_code in (200, 201), own.json()
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer), base_url=LOCAL) as client:
        assert client.request(method, url, headers={"Origin": "http://evil.example"}, **kwargs).status_code == 403


def test_reads_need_the_key(fake_gallery_path, fake_recognizer, clustered):
    with TestClient(create_app(fake_gallery_path, api_key=KEY, recognizer=fake_recognizer), base_url=LOCAL) as client:
        for url in ["/v1/people", _path(clustered["red"]), f"/v1/faces/{clustered['red_faces'][0]}/thumbnail",
                    "/v1/faces/unassigned"]:
            assert client.get(url).status_code == 401, url
            assert client.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200, url


def test_a_read_only_gallery_is_listed_and_changes_are_503(fake_gallery_path, fake_recognizer, clustered,
                                                           monkeypatch):
    from marginface.serve import service

    monkeypatch.setattr(service.Gallery, "open", functools.partial(Gallery.open.__func__, Gallery, read_only=True))
    with TestClient(create_app(fake_gallery_path, recognizer=fake_recognizer), base_url=LOCAL) as client:
        assert client.get("/v1/people").json()["count"] == 2
        assert client.get(_path(clustered["red"])).status_code == 200
        for method, url, kwargs in WRITES:
            answer = client.request(method, _fill(url, clustered), **_fill(kwargs, clustered))
            assert answer.status_code == 503 and "open read-only" in answer.json()["detail"], (method, url)


def test_the_people_routes_are_one_router_over_the_service():
    from marginface.serve.deps import get_service
    from marginface.serve.people_routes import router

    paths = {(route.path, method) for route in router.routes for method in route.methods}
    assert paths == {("/v1/people", "GET"), ("/v1/people/{ref:path}", "GET"), ("/v1/people:name", "POST"),
                     ("/v1/people:merge", "POST"), ("/v1/people:split", "POST"), ("/v1/people:not", "POST"),
                     ("/v1/people/{ref:path}", "DELETE"), ("/v1/faces/{face_id}/thumbnail", "GET"),
                     ("/v1/faces/unassigned", "GET"), ("/v1/faces", "POST")}
    for route in router.routes:
        assert any(dep.call is get_service for dep in route.dependant.dependencies), route.path
