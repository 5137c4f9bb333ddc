"""The JSON routes, on one module-level APIRouter: each reads the service through a dependency (deps.py) and
answers a Pydantic model (schemas.py), so /openapi.json describes every answer. create_app includes the router
with the app's own guard (the API key) and settings.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations as objects.
"""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from marginface import __version__
from marginface.infer.gallery import MAX_NAME_LENGTH, GalleryError, check_identity_name
from marginface.serve import schemas
from marginface.serve.deps import ServiceDep, UploadForm
from marginface.serve.service import Photo, RecognitionService, Upload
from marginface.serve.uploads import all_files, multipart_body, one_file, text

log = logging.getLogger(__name__)

STATUS_MEANING = {
    400: "a damaged, empty, elongated or oversized image, a decompression bomb, a malformed multipart body, or a "
         "Host this service does not answer to",
    401: "no API key, or a wrong one",
    403: "a state-changing request from a foreign Origin",
    404: "no such identity, person or face, or no thumbnail kept of the face",
    408: "the request body did not arrive in time",
    409: "a photo already enrolled under another name, a new name that reads the same as an existing person's "
         "(name_spelling), or a change against a 'not this person' mark",
    413: "the request body is over the upload limit",
    415: "not multipart/form-data, or bytes of no image format",
    422: "no face in a photo (for an enrolment: in any of its photos), a missing or invalid field or parameter, "
         "or a name the gallery refuses",
    503: "the gallery is damaged, removed, replaced, unreadable or cannot be written now, or the pixel budget "
         "is busy (Retry-After)",
    507: "the disk holding the gallery is full",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the ErrorBody shape."""
    return {code: {"model": schemas.ErrorBody, "description": STATUS_MEANING[code]} for code in sorted(set(codes))}


BASE = (400,)  # every route: a Host that is not served (401 for the key is added where the app has one)
PHOTO = (*BASE, 408, 413, 415, 422, 503)  # a multipart photo upload: body limits, image checks, no face, busy
PHOTO_BODY = multipart_body({"image": "a photo (JPEG, PNG, WebP, ...)"})
NAME_FIELD = {"description": "the person's name: stored as Unicode NFC without surrounding spaces; no control "
                             "characters, not '.', '..' or anything reading as 'unknown'",
              "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": r"\S"}

router = APIRouter()


def jsonable(value: Any) -> Any:
    """Numpy scalars and arrays (and containers of them) as plain JSON types."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


async def _photo(service: RecognitionService, file: UploadFile, field: str, *, thumbnails: bool = False) -> Photo:
    """One upload's faces (with their aligned crops when `thumbnails`), found off the event loop within the pixel
    budget; its pixels are gone on return (photos are decoded one at a time and never written to disk by us).
    ImageInputError: 400 or 415."""
    data = await file.read()
    return await run_in_threadpool(lambda: service.photo(Upload(file.filename or field, data), thumbnails=thumbnails))


def _check_name(name: str) -> str:
    """The gallery's own name rule (check_identity_name), as a 422 that says what is wrong."""
    try:
        return check_identity_name(name)
    except GalleryError as err:
        raise HTTPException(422, str(err)) from err


@router.get("/healthz", tags=["service"], response_model=schemas.Health, responses=errors(*BASE, 503))
async def healthz(service: ServiceDep) -> dict:
    """Liveness plus what is loaded: model fingerprint, threshold and gallery size; `status` is "degraded"
    and `write_problem` says why when the gallery cannot take changes now (searches still work)."""
    stats = await run_in_threadpool(service.stats)
    problem = await run_in_threadpool(service.gallery.write_problem)
    return jsonable({"status": "degraded" if problem else "ok", "version": __version__,
                     "model": service.recognizer.fingerprint.key, "threshold": service.threshold.to_dict(),
                     "identities": stats.get("identities"), "templates": stats.get("templates"),
                     "writable": problem is None, "write_problem": problem})


@router.post("/v1/detect", tags=["faces"], openapi_extra=PHOTO_BODY, response_model=schemas.Detected,
             responses=errors(*PHOTO, 403))
async def detect(service: ServiceDep, form: UploadForm) -> dict:
    """Every face: box, five landmarks, detection score and quality signals (no embedding)."""
    photo = await _photo(service, one_file(form, "image"), "image")
    return jsonable({"image": photo.size, "faces": [face.to_dict() for face in photo.faces]})


@router.post("/v1/embed", tags=["faces"], openapi_extra=PHOTO_BODY, response_model=schemas.Embedded,
             responses=errors(*PHOTO, 403))
async def embed(service: ServiceDep, form: UploadForm,
                all_faces: Annotated[bool, Query(description="embed every face, not only the main one")] = False
                ) -> dict:
    """Unit embedding of the main face (or of every face), with the model fingerprint it belongs to."""
    photo = await _photo(service, one_file(form, "image"), "image")
    chosen = photo.faces if all_faces else [service.main_face(photo)]
    return jsonable({"image": photo.size, "model": service.recognizer.fingerprint.key,
                     "faces": [face.to_dict(embedding=True) for face in chosen]})


@router.post("/v1/verify", tags=["faces"], response_model=schemas.Verified, responses=errors(*PHOTO, 403),
             openapi_extra=multipart_body({"image1": "first photo", "image2": "second photo"}))
async def verify(service: ServiceDep, form: UploadForm) -> dict:
    """Are the main faces of two photos the same person? Score, decision, threshold and its source."""
    first = await _photo(service, one_file(form, "image1"), "image1")
    service.main_face(first)  # a faceless first photo is named before the second is decoded
    second = await _photo(service, one_file(form, "image2"), "image2")
    result = await run_in_threadpool(service.verify, first, second)
    return jsonable({**result.to_dict(), "image1": {**first.size, "box": first.faces[0].to_dict()["box"]},
                     "image2": {**second.size, "box": second.faces[0].to_dict()["box"]}})


@router.post("/v1/identify", tags=["gallery"], openapi_extra=PHOTO_BODY, response_model=schemas.Identified,
             responses=errors(*PHOTO, 403))
async def identify(service: ServiceDep, form: UploadForm,
                   k: Annotated[int, Query(ge=1, le=100, description="candidates listed per face")] = 1) -> dict:
    """Every face with the gallery's answer: a name or "unknown", its score and the threshold used."""
    photo = await _photo(service, one_file(form, "image"), "image")
    identified = await run_in_threadpool(service.identify, photo, k)
    return jsonable({"image": photo.size, "faces": [item.to_dict() for item in identified]})


@router.get("/v1/identities", tags=["gallery"], response_model=schemas.Identities, responses=errors(*BASE, 503))
async def list_identities(service: ServiceDep) -> dict:
    """Every enrolled person with their number of templates."""
    identities = await run_in_threadpool(service.identities)
    return jsonable({"count": len(identities), "identities": identities})


@router.post("/v1/identities", tags=["gallery"], status_code=status.HTTP_201_CREATED, response_model=schemas.Enrolled,
             responses=errors(*PHOTO, 403, 409, 507),
             openapi_extra=multipart_body({"images": "one or more photos of the person"}, repeated=("images",),
                                          texts={"name": NAME_FIELD}))
async def enrol(service: ServiceDep, form: UploadForm, allow_shared_photo: Annotated[bool, Query(
        description="enrol photos already enrolled under another name too (identify then answers whichever "
                    "came first)")] = False) -> dict:
    """Enrol the main face of each photo under `name` in one transaction (only templates and hashes are kept).
    A photo without a face is skipped and listed in `skipped`; when no photo shows a face, nothing is
    enrolled (422). The same policy as `marginface enrol` (infer.enrolment)."""
    name = _check_name(text(form, "name"))
    photos = [await _photo(service, file, f"images[{i}]")  # decoded one at a time
              for i, file in enumerate(all_files(form, "images"))]
    result = await run_in_threadpool(service.enrol, name, photos, allow_shared_photos=allow_shared_photo)
    return result.to_dict()


@router.delete("/v1/identities/{name:path}", tags=["gallery"], response_model=schemas.Removed,
               responses=errors(*BASE, 403, 404, 422, 503, 507))
async def delete_identity(service: ServiceDep, name: str) -> dict:
    """Delete a person and all their templates."""
    try:
        await run_in_threadpool(service.remove, name)
    except KeyError as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no identity named {name!r} in the gallery") from err
    return {"removed": name}
