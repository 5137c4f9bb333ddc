"""The FastAPI application: JSON routes over RecognitionService plus the static web page, built by a factory.

No `from __future__ import annotations` here: FastAPI must evaluate the routes' local `UploadForm` alias.
"""

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from marginface import __version__
from marginface.errors import MarginfaceError, UsageError
from marginface.infer.gallery import GalleryError, check_identity_name
from marginface.infer.images import DEFAULT_MAX_PIXELS
from marginface.infer.recognizer import FaceRecognizer
from marginface.serve.auth import ApiKeyGuard, BrowserGuard
from marginface.serve.limits import DEFAULT_BODY_TIMEOUT_S, BodyLimitMiddleware
from marginface.serve.service import Photo, RecognitionService, Upload
from marginface.serve.uploads import all_files, form_reader, multipart_body, one_file, text

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files("marginface.serve") / "static"))


def jsonable(value: Any) -> Any:
    """Numpy scalars and arrays (and containers of them) as plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class ErrorBody(BaseModel):
    """Every error answer: one human-readable line naming the file, field or value that is wrong."""

    detail: str


STATUS_MEANING = {
    400: "a damaged, empty, elongated or oversized image, a decompression bomb, a malformed multipart body, or a "
         "Host this service does not answer to",
    401: "no API key, or a wrong one",
    403: "a state-changing request from a foreign Origin",
    404: "no such identity",
    408: "the request body did not arrive in time",
    409: "a photo already enrolled under another name",
    413: "the request body is over the upload limit",
    415: "not multipart/form-data, or bytes of no image format",
    422: "no face in a photo, a missing or invalid field or parameter, or a name the gallery refuses",
    503: "the gallery is damaged, removed, replaced, unreadable or cannot be written now, or the pixel budget "
         "is busy (Retry-After)",
    507: "the disk holding the gallery is full",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the ErrorBody shape."""
    return {code: {"model": ErrorBody, "description": STATUS_MEANING[code]} for code in sorted(set(codes))}


async def _photo(service: RecognitionService, file: UploadFile, field: str) -> Photo:
    """One upload's faces, found off the event loop within the pixel budget; its pixels are gone on return
    (photos are decoded one at a time and never written to disk by us). ImageInputError: 400 or 415."""
    data = await file.read()
    return await run_in_threadpool(service.photo, Upload(file.filename or field, data))


async def answer_error(_: Request, err: Exception) -> JSONResponse:
    """The one handler of the library's errors (MarginfaceError): its `http_status`, its message as detail,
    Retry-After when the error says when to try again. Any other exception is a bug: 500."""
    code = getattr(err, "http_status", 500)
    (log.error if code >= 500 else log.info)("%s", err)
    retry = getattr(err, "retry_after_s", None)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return JSONResponse({"detail": str(err)}, status_code=code, headers=headers)


def _declared(guard: ApiKeyGuard) -> Callable[..., None]:
    """`guard` as a FastAPI dependency that also declares, when a key is configured, the two ways to send it
    (X-API-Key and Bearer) as OpenAPI security schemes; the guard itself reads the headers and decides."""
    if not guard.enabled:
        return guard
    header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey",
                          description="the service's API key")
    bearer = HTTPBearer(auto_error=False, scheme_name="Bearer", description="the API key as a Bearer token")

    def check(request: Request, _key: Annotated[str | None, Security(header)],
              _token: Annotated[Any, Security(bearer)]) -> None:
        guard(request)

    return check


def _check_name(name: str) -> str:
    """The gallery's own name rule (check_identity_name), as a 422 that says what is wrong."""
    try:
        return check_identity_name(name)
    except GalleryError as err:
        raise HTTPException(422, str(err)) from err


def upload_limit_bytes(max_upload_mb: float) -> int:
    """The body limit in bytes; ValueError unless `max_upload_mb` is a finite number of MiB of at least one byte."""
    if not isinstance(max_upload_mb, (int, float)) or not math.isfinite(max_upload_mb) or max_upload_mb <= 0:
        raise UsageError(f"the upload limit must be a positive, finite number of MiB, got {max_upload_mb}")
    max_bytes = int(max_upload_mb * 1024 * 1024)
    if max_bytes < 1:
        raise UsageError(f"the upload limit of {max_upload_mb:g} MiB is under one byte: no photo fits")
    return max_bytes


def create_app(gallery_path: str | Path, *, api_key: str | None = None, max_upload_mb: float = 10.0,
               max_pixels: int = DEFAULT_MAX_PIXELS, recognizer: FaceRecognizer | None = None,
               allowed_hosts: Sequence[str] | None = None, allowed_origins: Sequence[str] = (),
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S, pixel_budget: int | None = None) -> FastAPI:
    """A ready FastAPI app serving the gallery at `gallery_path` (model loaded once, here).

    `api_key` (when given) guards every route except the page's static files and the API description, checked
    before any of the body is read; request bodies over `max_upload_mb` MiB get 413, bodies not received within
    `body_timeout_s` seconds 408; images over `max_pixels` pixels get 400. Photos are decoded one at a time,
    and all requests together hold at most `pixel_budget` decoded pixels (default twice `max_pixels`; a photo
    that finds no room within 30 s gets 503). Without a key
    only loopback Host names are served (plus `allowed_hosts`), and state-changing requests from a foreign
    Origin (not in `allowed_origins`) get 403 whether or not there is a key (auth.BrowserGuard).
    """
    guard = ApiKeyGuard(api_key)  # argument errors first, before the model is loaded
    max_bytes = upload_limit_bytes(max_upload_mb)
    if not isinstance(body_timeout_s, (int, float)) or not math.isfinite(body_timeout_s) or body_timeout_s <= 0:
        raise UsageError(f"the body timeout must be a positive, finite number of seconds, got {body_timeout_s}")
    service = RecognitionService(gallery_path, recognizer=recognizer, max_pixels=max_pixels, pixel_budget=pixel_budget)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="marginface", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Face detection, verification and identification against a gallery. "
                              "Every decision carries its threshold and where the threshold came from. "
                              "Every error answers {\"detail\": \"...\"}. The interactive /docs page is off: "
                              "Swagger UI loads its script from a CDN; view /openapi.json with a local tool.")
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes, timeout_s=body_timeout_s)
    app.add_middleware(BrowserGuard, api_key_required=guard.enabled, allowed_hosts=allowed_hosts,
                       allowed_origins=allowed_origins)  # added last: runs first, before any body is read
    guarded = [Depends(_declared(guard))]
    base = (400, 401) if guard.enabled else (400,)  # every guarded route: Host refused; the key, when there is one
    photo = (*base, 408, 413, 415, 422, 503)  # a multipart photo upload: body limits, image checks, no face, busy

    app.add_exception_handler(MarginfaceError, answer_error)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(_: Request, err: RequestValidationError) -> JSONResponse:
        """422 with one line naming each bad parameter, the same {"detail": str} shape as every other error."""
        problems = "; ".join(f"{' '.join(str(part) for part in e.get('loc', ()))}: {e.get('msg')}"
                             for e in err.errors())
        return JSONResponse({"detail": problems}, status_code=422)

    @app.get("/healthz", dependencies=guarded, tags=["service"], responses=errors(*base, 503))
    async def healthz() -> dict:
        """Liveness plus what is loaded: model fingerprint, threshold and gallery size; `status` is "degraded"
        and `write_problem` says why when the gallery cannot take changes now (searches still work)."""
        stats = await run_in_threadpool(service.stats)
        problem = await run_in_threadpool(service.gallery.write_problem)
        return jsonable({"status": "degraded" if problem else "ok", "version": __version__,
                         "model": service.recognizer.fingerprint.key, "threshold": service.threshold.to_dict(),
                         "identities": stats.get("identities"), "templates": stats.get("templates"),
                         "writable": problem is None, "write_problem": problem})

    UploadForm = Annotated[FormData, Depends(form_reader(max_bytes))]
    photo_body = multipart_body({"image": "a photo (JPEG, PNG, WebP, ...)"})

    @app.post("/v1/detect", dependencies=guarded, tags=["faces"], openapi_extra=photo_body,
              responses=errors(*photo, 403))
    async def detect(form: UploadForm) -> dict:
        """Every face: box, five landmarks, detection score and quality signals (no embedding)."""
        photo = await _photo(service, one_file(form, "image"), "image")
        return jsonable({"image": photo.size, "faces": [face.to_dict() for face in photo.faces]})

    @app.post("/v1/embed", dependencies=guarded, tags=["faces"], openapi_extra=photo_body,
              responses=errors(*photo, 403))
    async def embed(form: UploadForm,
                    all_faces: Annotated[bool, Query(description="embed every face, not only the main one")] = False
                    ) -> dict:
        """Unit embedding of the main face (or of every face), with the model fingerprint it belongs to."""
        photo = await _photo(service, one_file(form, "image"), "image")
        chosen = photo.faces if all_faces else [service.main_face(photo)]
        return jsonable({"image": photo.size, "model": service.recognizer.fingerprint.key,
                         "faces": [face.to_dict(embedding=True) for face in chosen]})

    @app.post("/v1/verify", dependencies=guarded, tags=["faces"], responses=errors(*photo, 403),
              openapi_extra=multipart_body({"image1": "first photo", "image2": "second photo"}))
    async def verify(form: UploadForm) -> dict:
        """Are the main faces of two photos the same person? Score, decision, threshold and its source."""
        first = await _photo(service, one_file(form, "image1"), "image1")
        service.main_face(first)  # a faceless first photo is named before the second is decoded
        second = await _photo(service, one_file(form, "image2"), "image2")
        result = await run_in_threadpool(service.verify, first, second)
        return jsonable({**result.to_dict(), "image1": {**first.size, "box": first.faces[0].to_dict()["box"]},
                         "image2": {**second.size, "box": second.faces[0].to_dict()["box"]}})

    @app.post("/v1/identify", dependencies=guarded, tags=["gallery"], openapi_extra=photo_body,
              responses=errors(*photo, 403))
    async def identify(form: UploadForm,
                       k: Annotated[int, Query(ge=1, le=100, description="candidates listed per face")] = 1) -> dict:
        """Every face with the gallery's answer: a name or "unknown", its score and the threshold used."""
        photo = await _photo(service, one_file(form, "image"), "image")
        identified = await run_in_threadpool(service.identify, photo, k)
        return jsonable({"image": photo.size, "faces": [item.to_dict() for item in identified]})

    @app.get("/v1/identities", dependencies=guarded, tags=["gallery"], responses=errors(*base, 503))
    async def list_identities() -> dict:
        """Every enrolled person with their number of templates."""
        identities = await run_in_threadpool(service.identities)
        return jsonable({"count": len(identities), "identities": identities})

    @app.post("/v1/identities", dependencies=guarded, tags=["gallery"], status_code=status.HTTP_201_CREATED,
              responses=errors(*photo, 403, 409, 507),
              openapi_extra=multipart_body({"images": "one or more photos of the person"}, repeated=("images",),
                                           texts={"name": "the person's name"}))
    async def enrol(form: UploadForm, allow_shared_photo: Annotated[bool, Query(
            description="enrol photos already enrolled under another name too (identify then answers whichever "
                        "came first)")] = False) -> dict:
        """Enrol the main face of each photo under `name` (one transaction; only templates and hashes are kept)."""
        name = _check_name(text(form, "name"))
        photos = []
        for i, file in enumerate(all_files(form, "images")):  # one at a time: a faceless photo stops the rest
            photos.append(await _photo(service, file, f"images[{i}]"))
            service.main_face(photos[-1])
        added, duplicates = await run_in_threadpool(service.enrol, name, photos,
                                                    allow_shared_photos=allow_shared_photo)
        return {"name": name, "added": added, "duplicates": duplicates}

    @app.delete("/v1/identities/{name:path}", dependencies=guarded, tags=["gallery"],
              responses=errors(*base, 403, 404, 422, 503, 507))
    async def delete_identity(name: str) -> dict:
        """Delete a person and all their templates."""
        try:
            await run_in_threadpool(service.remove, name)
        except KeyError as err:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no identity named {name!r} in the gallery") from err
        return {"removed": name}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page (static; it asks for the API key itself when the service has one)."""
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
