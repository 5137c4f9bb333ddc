"""FacePreprocessor: aligned crops reach a non-112 model rescaled (never centre-cropped); fallbacks are named."""

from __future__ import annotations

import numpy as np

from marginface.data.align import ARCFACE_TEMPLATE, align_face
from marginface.data.synthetic import synthetic_face
from marginface.infer.prepare import FacePreprocessor


def test_aligned_112_crop_is_rescaled_for_a_128_model_not_centre_cropped() -> None:
    face = synthetic_face(7, 1, 0)  # an aligned 112x112 crop
    prep = FacePreprocessor(size=128)
    out = prep(face, "a.png")
    assert out.shape == (128, 128, 3)
    assert prep.rescaled == 1 and prep.fallbacks == 0 and prep.no_face == []
    # the same as aligning the crop's own landmarks (the template) to the template scaled to 128
    direct = align_face(face, ARCFACE_TEMPLATE, 128)
    assert np.abs(out.astype(int) - direct.astype(int)).mean() < 6


def test_photo_without_face_is_counted_and_named() -> None:
    prep = FacePreprocessor(size=112)
    out = prep(np.full((200, 160, 3), 90, np.uint8), "photos/empty.jpg")
    assert out.shape == (112, 112, 3)
    assert prep.fallbacks == 1 and prep.no_face == ["photos/empty.jpg"]
    assert prep(np.zeros((112, 112, 3), np.uint8)).shape == (112, 112, 3) and prep.fallbacks == 1
