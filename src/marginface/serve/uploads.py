"""Multipart uploads read in memory only (never spooled to disk), plus their OpenAPI description."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import HTTPException, Request, status
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from marginface.errors import InputError

MAX_FILES = 64  # photos per request (enrolment); a bound on parser work, far above any sane use


class InMemoryMultiPartParser(MultiPartParser):
    """Starlette's multipart parser with file parts held in memory up to `max_bytes` instead of rolling over to a
    temporary file at 1 MiB: photos are biometric data and must not touch the disk. The body-size middleware
    bounds `max_bytes`."""

    def __init__(self, request: Request, stream, max_bytes: int) -> None:
        super().__init__(request.headers, stream, max_files=MAX_FILES, max_fields=MAX_FILES)
        self.spool_max_size = max_bytes

    def on_part_end(self) -> None:
        """A text field must decode in its charset (Starlette would fall back to Latin-1: mojibake names)."""
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset or "utf-8")
            except UnicodeDecodeError as err:
                raise TextFieldNotDecodable(
                    f"text field {part.field_name!r} is not valid {self._charset or 'utf-8'}: byte "
                    f"{bytes(part.data)[err.start:err.start + 1]!r} at position {err.start}; send names as UTF-8"
                ) from err
        super().on_part_end()


class TextFieldNotDecodable(InputError):
    """A multipart text field whose bytes are not valid in the form's charset (raised while parsing)."""


async def read_form(request: Request) -> AsyncIterator[FormData]:
    """A FastAPI dependency yielding the request's multipart form, file parts held in memory up to the app's
    upload limit (`app.state.upload_limit_bytes`); closed after the response."""
    content_type, _ = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send photos as multipart/form-data (e.g. curl -F image=@photo.jpg), got content "
                            f"type {content_type.decode('latin-1') or 'none'!r}")
    try:
        async with aclosing(request.stream()) as stream:
            form = await InMemoryMultiPartParser(request, stream, request.app.state.upload_limit_bytes).parse()
    except MultiPartException as err:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed multipart body: {err.message}") from err
    except TextFieldNotDecodable as err:
        raise HTTPException(422, str(err)) from err
    try:
        yield form
    finally:
        await form.close()


def _missing(field: str, what: str) -> HTTPException:
    return HTTPException(422, f"missing {what} field {field!r} in the multipart form")


def one_file(form: FormData, field: str) -> UploadFile:
    """The single file uploaded as `field`; 422 naming the field when absent."""
    value = form.get(field)
    if not isinstance(value, UploadFile):
        raise _missing(field, "file")
    return value


def all_files(form: FormData, field: str) -> list[UploadFile]:
    """Every file uploaded as `field` (repeatable); 422 naming the field when there is none."""
    files = [value for value in form.getlist(field) if isinstance(value, UploadFile)]
    if not files:
        raise _missing(field, "file")
    return files


def text(form: FormData, field: str) -> str:
    """The text value of `field`; 422 naming the field when absent."""
    value = form.get(field)
    if not isinstance(value, str):
        raise _missing(field, "text")
    return value


def multipart_body(files: dict[str, str], *, repeated: tuple[str, ...] = (),
                   texts: dict[str, dict[str, Any]] | None = None) -> dict:
    """OpenAPI `openapi_extra` describing a required multipart body: file fields (a repeated one takes at least
    one file) and text fields (each a JSON schema of a string: description, lengths)."""
    binary = {"type": "string", "format": "binary"}
    properties: dict[str, dict] = {}
    for name, schema in (texts or {}).items():
        properties[name] = {"type": "string", **schema}
    for name, description in files.items():
        properties[name] = ({"type": "array", "items": binary, "minItems": 1, "maxItems": MAX_FILES,
                             "description": description} if name in repeated
                            else {**binary, "description": description})
    schema = {"type": "object", "required": list(properties), "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
