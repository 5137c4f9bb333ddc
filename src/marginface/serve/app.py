"""The FastAPI application: the routes (routes.py, one APIRouter) over RecognitionService, the static web page,
the body and browser guards, and the one handler of the library's errors, put together by a factory."""

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from marginface import __version__
from marginface.errors import MarginfaceError, UsageError
from marginface.infer.images import DEFAULT_MAX_PIXELS
from marginface.infer.recognizer import FaceRecognizer
from marginface.serve.auth import ApiKeyGuard, BrowserGuard
from marginface.serve.limits import DEFAULT_BODY_TIMEOUT_S, BodyLimitMiddleware
from marginface.serve.people_routes import router as people_router
from marginface.serve.routes import STATUS_MEANING, errors, jsonable, router
from marginface.serve.schemas import ErrorBody
from marginface.serve.service import RecognitionService

__all__ = ["STATUS_MEANING", "ErrorBody", "answer_error", "create_app", "errors", "jsonable", "upload_limit_bytes"]

log = logging.getLogger(__name__)

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
STATIC_DIR = Path(str(resources.files("marginface.serve") / "static"))


async def answer_error(_: Request, err: Exception) -> JSONResponse:
    """The one handler of the library's errors (MarginfaceError): its `http_status`, its message as detail,
    Retry-After when the error says when to try again. Any other exception is a bug: 500."""
    code = getattr(err, "http_status", 500)
    (log.error if code >= 500 else log.info)("%s", err)
    retry = getattr(err, "retry_after_s", None)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return JSONResponse({"detail": str(err)}, status_code=code, headers=headers)


async def invalid_parameter(_: Request, err: RequestValidationError) -> JSONResponse:
    """422 with one line naming each bad parameter, the same {"detail": str} shape as every other error."""
    problems = "; ".join(f"{' '.join(str(part) for part in e.get('loc', ()))}: {e.get('msg')}"
                         for e in err.errors())
    return JSONResponse({"detail": problems}, status_code=422)


async def method_not_allowed(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """HTTP errors raised by routing, as {"detail": str}; a 405's Allow lists every method the path has (Starlette
    lists only the first route's, so OPTIONS /v1/identities said `Allow: GET` though POST is served too)."""
    headers = dict(err.headers or {})
    if err.status_code == 405:
        served = [method for method in HTTP_METHODS
                  if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                         for route in request.app.router.routes)]
        headers["Allow"] = ", ".join(served)
    return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=headers or None)


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
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S, pixel_budget: int | None = None,
               keep_thumbnails: bool = False) -> FastAPI:
    """A ready FastAPI app serving the gallery at `gallery_path` (model loaded once, here).

    `api_key` (when given) guards every route except the page's static files and the API description, checked
    before any of the body is read; request bodies over `max_upload_mb` MiB get 413, bodies not received within
    `body_timeout_s` seconds 408; images over `max_pixels` pixels get 400. Photos are decoded one at a time,
    and all requests together hold at most `pixel_budget` decoded pixels (default twice `max_pixels`; a photo
    that finds no room within 30 s gets 503). Without a key
    only loopback Host names are served (plus `allowed_hosts`), and state-changing requests from a foreign
    Origin (not in `allowed_origins`) get 403 whether or not there is a key (auth.BrowserGuard).
    `keep_thumbnails` stores each uploaded face's aligned crop with its face record (POST /v1/faces); faces are
    biometric data, so it is off by default and the People view then shows face counts and photo names.
    """
    guard = ApiKeyGuard(api_key)  # argument errors first, before the model is loaded
    max_bytes = upload_limit_bytes(max_upload_mb)
    if not isinstance(body_timeout_s, (int, float)) or not math.isfinite(body_timeout_s) or body_timeout_s <= 0:
        raise UsageError(f"the body timeout must be a positive, finite number of seconds, got {body_timeout_s}")
    service = RecognitionService(gallery_path, recognizer=recognizer, max_pixels=max_pixels, pixel_budget=pixel_budget,
                                 keep_thumbnails=keep_thumbnails)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="marginface", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Face detection, verification and identification against a gallery. "
                              "Every decision carries its threshold and where the threshold came from. "
                              "Every error answers {\"detail\": \"...\"}. The interactive /docs page is served "
                              "from this service's own copy of Swagger UI (nothing from a CDN).")
    app.state.service = service  # read by the routes through deps.get_service
    app.state.upload_limit_bytes = max_bytes  # read by uploads.read_form
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes, timeout_s=body_timeout_s)
    app.add_middleware(BrowserGuard, api_key_required=guard.enabled, allowed_hosts=allowed_hosts,
                       allowed_origins=allowed_origins)  # added last: runs first, before any body is read
    app.add_exception_handler(MarginfaceError, answer_error)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.add_exception_handler(StarletteHTTPException, method_not_allowed)
    for routes in (router, people_router):
        app.include_router(routes, dependencies=[Depends(_declared(guard))],
                           responses=errors(401) if guard.enabled else None)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page (static; it asks for the API key itself when the service has one)."""
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_offline_docs(app)
    return app


def _add_offline_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the swagger-ui-bundle package's files, served here (no CDN, works offline)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """The interactive API page; its script, style and icon come from /docs/assets."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title="marginface API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")
