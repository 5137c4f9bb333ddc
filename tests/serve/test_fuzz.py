"""A schema-based fuzzer (schemathesis) against the service with the fake recognizer, in process: generated
requests for every operation of /openapi.json, each answer checked against its declared status codes, content
type and response model (and never a 500). Bounded in examples per operation; no network."""

from __future__ import annotations

import pytest

from marginface.infer.gallery import Gallery
from marginface.infer.people import People
from marginface.serve import create_app

from .fakes import BLUE, RED, face, store_photo

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")
from hypothesis import HealthCheck, settings  # noqa: E402 - after the skip: hypothesis comes with schemathesis
from schemathesis.checks import positive_data_acceptance  # noqa: E402

KEY = "fuzz-key"
EXAMPLES = 30  # per operation and generation mode: seconds in all with the fake recognizer


@pytest.fixture
def api_schema(fake_gallery_path, fake_recognizer):
    """The service's own OpenAPI description, served by an app (key required) over a gallery with two clusters
    of faces with thumbnails (@1: faces 1-2, @2: face 3), so the people routes' examples find someone."""
    with Gallery.open(fake_gallery_path) as gallery:
        people = People(gallery)
        ids = [i for n, data in enumerate([face(RED, 30), face(RED, 44), face(BLUE)])
               for i in store_photo(people, fake_recognizer, f"{n}.png", data)]
        people.apply_clustering(ids, [0, 0, 1])
    app = create_app(fake_gallery_path, api_key=KEY, recognizer=fake_recognizer, max_upload_mb=1,
                     keep_thumbnails=True)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_answer_is_what_the_description_declares(case):
    """Every check but `positive_data_acceptance`: a schema-valid body may hold bytes of no image, or a photo
    without a face, which the service rightly refuses (400/415/422) and no schema can rule out."""
    case.call_and_validate(headers={"X-API-Key": KEY}, excluded_checks=[positive_data_acceptance])
