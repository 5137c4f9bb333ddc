"""The routes' dependencies as `Annotated` aliases, in one place: the app's RecognitionService and the request's
multipart form (read in memory within the app's upload limit)."""

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from marginface.serve.service import RecognitionService
from marginface.serve.uploads import read_form


def get_service(request: Request) -> RecognitionService:
    """The RecognitionService create_app built for this app (one model and gallery for all requests)."""
    return request.app.state.service


ServiceDep = Annotated[RecognitionService, Depends(get_service)]
UploadForm = Annotated[FormData, Depends(read_form)]
