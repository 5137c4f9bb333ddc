"""The one root of users' errors: statuses carried by the classes, foreign errors recognised by type."""

from __future__ import annotations

import pytest

from marginface.errors import EXIT_BUG, EXIT_USER_ERROR, LOST_PEER, InputError, MarginfaceError, RunFailed, user_error


def _error_classes() -> list[type[BaseException]]:
    """Every error class the library defines outside the modules left alone this round."""
    import marginface.data.image
    import marginface.data.pairs
    import marginface.data.recordio
    import marginface.data.samples
    import marginface.data.staging
    import marginface.infer.export
    import marginface.infer.gallery
    import marginface.infer.images
    import marginface.infer.recognizer
    import marginface.infer.thresholds
    import marginface.serve.service
    import marginface.serve.uploads
    import marginface.train.checkpoint
    import marginface.train.config
    import marginface.train.trainer

    modules = [marginface.data.image, marginface.data.pairs, marginface.data.recordio, marginface.data.samples,
               marginface.data.staging, marginface.infer.export, marginface.infer.gallery, marginface.infer.images,
               marginface.infer.recognizer, marginface.infer.thresholds, marginface.serve.service,
               marginface.serve.uploads, marginface.train.checkpoint, marginface.train.config,
               marginface.train.trainer]
    return [value for module in modules for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == module.__name__]


@pytest.mark.parametrize("kind", _error_classes(), ids=lambda kind: kind.__name__)
def test_every_library_error_class_derives_from_the_root_and_keeps_a_builtin_base(kind: type) -> None:
    assert issubclass(kind, MarginfaceError)
    assert issubclass(kind, (ValueError, RuntimeError))  # callers catching the old bases still catch them
    assert kind("x").exit_status == EXIT_USER_ERROR and 400 <= kind("x").http_status < 600


def test_statuses_the_service_answers() -> None:
    from marginface.infer.gallery import (
        GalleryError,
        GalleryFull,
        GalleryNotWritable,
        LookAlikeName,
        NameConflict,
        NameTaken,
        SharedPhoto,
    )
    from marginface.infer.images import ImageInputError
    from marginface.infer.recognizer import NoFaceError
    from marginface.serve.service import ServiceBusy

    assert [k("x").http_status for k in (GalleryError, GalleryFull, GalleryNotWritable, SharedPhoto, NoFaceError,
                                         ServiceBusy)] == [422, 507, 503, 409, 422, 503]
    # a name that is someone's, or looks like someone's: one conflict family, 409 (exit status 2 like every error)
    assert all(issubclass(k, NameConflict) and k("x").http_status == 409 for k in (NameTaken, LookAlikeName))
    assert ImageInputError("x", not_an_image=True).http_status == 415
    assert ImageInputError("x").http_status == 400
    assert ServiceBusy("x").retry_after_s == 5


def test_user_error_keeps_ours_and_oserror_and_calls_the_rest_bugs() -> None:
    ours, disk = InputError("bad file"), FileNotFoundError(2, "No such file", "a.jpg")
    assert user_error(ours) is ours and user_error(disk) is disk
    assert user_error(ValueError("a bug")) is None and user_error(KeyError("k")) is None
    assert EXIT_BUG not in (0, 1, EXIT_USER_ERROR)


def test_a_lost_peer_is_recognised_by_type_and_by_gloos_socket_words() -> None:
    import torch.distributed as dist

    by_type = user_error(dist.DistNetworkError("store timed out"))
    assert isinstance(by_type, RunFailed) and str(by_type) == "store timed out"
    gloo = user_error(RuntimeError("[pair.cc:534] Connection closed by peer [127.0.0.1]:1234"))
    assert isinstance(gloo, RunFailed) and str(gloo) == LOST_PEER
    assert user_error(RuntimeError("some other runtime failure")) is None


def test_import_and_perturbation_errors_derive_from_the_root_and_keep_value_error() -> None:
    from marginface.backbones.onnx_import import OnnxImportError
    from marginface.data.perturb import PerturbationSpecError

    for err in (OnnxImportError("bad graph"), PerturbationSpecError("blur:x")):
        assert isinstance(err, MarginfaceError) and isinstance(err, ValueError)
        assert user_error(err) is err and err.exit_status == 2
