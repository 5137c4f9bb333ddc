"""The people routes (issue 18), on their own APIRouter: named people and unnamed clusters of a gallery's face
records, the manual decisions on them (name, merge, split, not this person, remove), face thumbnails and
uploads of photos of unnamed people. Each route is a thin shell over `infer.people.People` through the service
(serve/service.py): it translates the request and the answer, the library decides and raises.

A person is addressed by their name or, for an unnamed cluster, as `@<id>`; in the path of GET and DELETE
/v1/people/{ref} the reference is URL-encoded (`/v1/people/%4012`, `/v1/people/Colin%20Powell`) and may hold
'/'. Because a name may be anything, even "merge" or "a/name", the changes are not sub-paths of a person
(GET /v1/people/merge shows a person called "merge"; OPTIONS there could not list its methods honestly, which
the schema fuzzer found): they are custom methods of the collection, `POST /v1/people:name` (AIP-136 style),
with every reference in the JSON body. The faces in no person are a read-only listing of their own, `GET
/v1/faces/unassigned` (paged by id: `limit`, `after`), next to the face routes; they are placed with
`:split`. Write routes are guarded like every other: the API key (create_app), the browser guard's Origin
check and the body limits (middleware).

No `from __future__ import annotations` here: FastAPI reads the routes' annotations as objects.
"""

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from marginface.infer.people import Person
from marginface.serve import schemas
from marginface.serve.deps import ServiceDep, UploadForm
from marginface.serve.routes import BASE, PHOTO, _photo, errors, jsonable
from marginface.serve.uploads import all_files, multipart_body

log = logging.getLogger(__name__)

router = APIRouter(tags=["people"])

READ = (*BASE, 404, 422, 503)  # a person or face the gallery does not hold, a bad id; an unreadable gallery
WRITE = (*BASE, 403, 404, 409, 422, 503, 507)  # + foreign Origin, 'not this person' conflicts, refusals, disk
JSON_BODY = (408, 413)  # a body that does not arrive in time, or is over the limit
Ref = Annotated[str, Path(description="a name, or @<id> for a cluster (URL-encoded)", examples=["@1"])]
FaceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a face record's id", examples=[1])]
MAX_PAGE = 500  # faces per page of a listing: a bounded answer however many faces a gallery holds
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"faces per page, 1 to {MAX_PAGE}")]
After = Annotated[int, Query(ge=0, le=2**63 - 1, description="list the faces with a larger id: the previous "
                                                               "page's `next_after`; 0 for the first page")]
JPEG = {200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
              "description": "the face's aligned crop (JPEG)"}}


def _person(person: Person) -> dict:
    """A Person as PersonOut."""
    return {"ref": person.ref, "kind": person.kind, "id": person.id, "name": person.name}


@router.get("/v1/people", response_model=schemas.PeopleList, responses=errors(*BASE, 503))
async def list_people(service: ServiceDep) -> dict:
    """Every named person (by name), then the unnamed clusters (largest first), with face counts."""
    people, counts = await run_in_threadpool(service.people_list)
    return jsonable({"count": len(people), "people": [info.to_dict() for info in people], "counts": counts,
                     "thumbnails_kept": service.keep_thumbnails})


@router.post("/v1/people:merge", response_model=schemas.PersonChanged, responses=errors(*WRITE, *JSON_BODY))
async def merge_people(service: ServiceDep, body: schemas.MergeBody) -> dict:
    """Merge two people into one: the named one is kept (`a` when both or neither are named); 409 when a face of
    one was marked 'not' the other."""
    return {"person": _person(await run_in_threadpool(service.merge_people, body.a, body.b))}


@router.post("/v1/people:split", response_model=schemas.PersonChanged, responses=errors(*WRITE, *JSON_BODY))
async def split_faces(service: ServiceDep, body: schemas.SplitBody) -> dict:
    """Move faces (as the user's placement) into a new cluster, or into the person `into`."""
    return {"person": _person(await run_in_threadpool(service.split_faces, body.faces, body.into))}


@router.get("/v1/people/{ref:path}", response_model=schemas.PersonDetailOut, responses=errors(*READ))
async def show_person(service: ServiceDep, ref: Ref) -> dict:
    """One person with every face record (photo, box, who placed it, whether a thumbnail is kept) and the faces
    marked 'not' them."""
    return jsonable((await run_in_threadpool(service.person, ref)).to_dict())


@router.post("/v1/people:name", response_model=schemas.PersonChanged, responses=errors(*WRITE, *JSON_BODY))
async def name_person(service: ServiceDep, body: schemas.NameBody) -> dict:
    """Name a cluster (its faces become the user's and identify answers with the name) or rename a person; a
    name someone has already merges the two into that person; one that reads the same as someone's (case,
    spacing, Unicode form, invisible characters and look-alike letters aside) is 409."""
    return {"person": _person(await run_in_threadpool(service.name_person, body.ref, body.name))}


@router.post("/v1/people:not", response_model=schemas.NotThisPersonOut, responses=errors(*WRITE, *JSON_BODY))
async def not_this_person(service: ServiceDep, body: schemas.NotBody) -> dict:
    """Mark faces 'not this person' (no clustering run puts them back) and take those in it out (unassigned)."""
    person, taken = await run_in_threadpool(service.not_this_person, body.faces, body.ref)
    return {"person": _person(person), "taken_out": taken}


@router.delete("/v1/people/{ref:path}", response_model=schemas.PersonRemoved, responses=errors(*WRITE))
async def remove_person(service: ServiceDep, ref: Ref) -> dict:
    """Delete a person with their faces and templates (biometric data); their photos stay recorded as scanned."""
    return await run_in_threadpool(service.remove_person, ref)


@router.get("/v1/faces/unassigned", response_model=schemas.UnassignedFacesOut, responses=errors(*BASE, 422, 503))
async def unassigned_faces(service: ServiceDep, limit: PageLimit = 100, after: After = 0) -> dict:
    """The faces in no person yet (fewer than the smallest cluster, or taken out as 'not this person'), by id, a
    page at a time; place them with POST /v1/people:split."""
    page = await run_in_threadpool(service.unassigned_faces, limit, after)
    return jsonable({**page.to_dict(), "thumbnails_kept": service.keep_thumbnails})


@router.get("/v1/faces/{face_id}/thumbnail", response_class=Response, responses={**JPEG, **errors(*READ)})
async def face_thumbnail(service: ServiceDep, face_id: FaceId) -> Response:
    """The face's aligned crop (JPEG); 404 when the gallery has no such face or kept no thumbnail of it."""
    data = await run_in_threadpool(service.thumbnail, face_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.post("/v1/faces", status_code=201, response_model=schemas.FacesAdded, responses=errors(*PHOTO, 403, 503, 507),
             openapi_extra=multipart_body({"images": "one or more photos of unnamed people"}, repeated=("images",)))
async def add_faces(service: ServiceDep, form: UploadForm) -> dict:
    """Store every face of each photo as an unassigned face record (a thumbnail too when the service keeps them);
    a photo without a face is listed in `without_face`, a photo stored before in `known`. Every photo is
    decoded and its faces found (one at a time; the pixels are not kept) before any is stored, so a bad
    photo anywhere in the request stores nothing."""
    photos, without = [], []
    added: list[int] = []
    found = [await _photo(service, file, f"images[{i}]", thumbnails=service.keep_thumbnails)
             for i, file in enumerate(all_files(form, "images"))]
    for photo in found:
        ids = await run_in_threadpool(service.add_faces, photo)
        if not photo.faces:
            without.append(photo.name)
        photos.append({"photo": photo.name, "face_ids": ids, "known": bool(photo.faces) and not ids})
        added += ids
    clustering = await run_in_threadpool(service.cluster_new_faces, added)  # the one clustering hook
    return {"photos": photos, "faces": len(added), "known": sum(p["known"] for p in photos),
            "without_face": without, "thumbnails_kept": service.keep_thumbnails, "clustering": clustering}

