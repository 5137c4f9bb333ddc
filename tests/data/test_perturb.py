"""Perturbations: each kind does what its definition says, deterministically; bad specs name themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.data.perturb import (
    KINDS,
    Perturbation,
    PerturbationSpecError,
    apply_perturbations,
    describe_perturbations,
    image_seed,
    occlusion_box,
    parse_perturbation,
    parse_perturbations,
)
from marginface.data.synthetic import synthetic_face


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return synthetic_face(3, 1, 0)


def test_every_kind_is_deterministic_and_keeps_shape(face: np.ndarray) -> None:
    specs = ["blur:2", "downscale:28", "jpeg:10", "occlude:0.3", "gamma:2", "gray", "motion:9", "pixelate:20"]
    assert {parse_perturbation(s).kind for s in specs} == set(KINDS)
    for spec in specs:
        p = parse_perturbation(spec)
        a, b = p.apply(face, seed=5), p.apply(face, seed=5)
        assert a.shape == face.shape and a.dtype == np.uint8, spec
        np.testing.assert_array_equal(a, b, err_msg=spec)
        assert not np.array_equal(a, face), f"{spec} left the image unchanged"
        assert p.spec == spec and parse_perturbation(p.spec) == p


def test_identity_levels(face: np.ndarray) -> None:
    for spec in ["blur:0", "downscale:112", "downscale:200", "gamma:1", "occlude:0"]:
        np.testing.assert_array_equal(parse_perturbation(spec).apply(face), face, err_msg=spec)


def test_gray_has_equal_channels(face: np.ndarray) -> None:
    out = parse_perturbation("gray").apply(face)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    expected = np.round(0.299 * face[..., 0] + 0.587 * face[..., 1] + 0.114 * face[..., 2])
    assert np.abs(out[..., 0].astype(float) - expected).max() <= 1


def test_downscale_removes_detail_monotonically(face: np.ndarray) -> None:
    def detail(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img.astype(float), axis=1)).mean())

    values = [detail(parse_perturbation(f"downscale:{px}").apply(face)) for px in (112, 56, 28, 14)]
    assert values == sorted(values, reverse=True) and values[-1] < 0.6 * values[0]
    # a face downscaled to 14 px carries no more than 14 × 14 distinct colours' worth of information
    tiny = parse_perturbation("downscale:14").apply(face)
    assert len(np.unique(tiny.reshape(-1, 3)[::8], axis=0)) < len(np.unique(face.reshape(-1, 3)[::8], axis=0))


def test_downscale_before_detection_leaves_the_photo_small() -> None:
    photo = synthetic_face(3, 2, 0)[:100]  # 100 × 112
    small = parse_perturbation("downscale:28").apply(photo, restore_size=False)
    assert small.shape == (25, 28, 3)
    np.testing.assert_array_equal(parse_perturbation("blur:1").apply(photo, restore_size=False),
                                  parse_perturbation("blur:1").apply(photo))


def test_blur_matches_a_gaussian_and_grows_with_sigma(face: np.ndarray) -> None:
    impulse = np.zeros((41, 41, 3), np.uint8)
    impulse[20, 20] = 255
    out = parse_perturbation("blur:3").apply(impulse)[:, 20, 0].astype(float)
    x = np.arange(41) - 20
    width = np.sqrt(np.sum(out * x ** 2) / np.sum(out))
    assert width == pytest.approx(3.0, rel=0.1)
    errors = [np.abs(parse_perturbation(f"blur:{s}").apply(face).astype(int) - face).mean() for s in (1, 2, 4)]
    assert errors == sorted(errors)


def test_jpeg_changes_bytes_more_at_low_quality(face: np.ndarray) -> None:
    errors = [np.abs(parse_perturbation(f"jpeg:{q}").apply(face).astype(int) - face).mean() for q in (90, 30, 5)]
    assert 0 < errors[0] < errors[1] < errors[2]


def test_occlude_covers_the_fraction_and_moves_with_the_seed() -> None:
    white = np.full((112, 112, 3), 255, np.uint8)
    for fraction in (0.1, 0.25, 0.5, 1.0):
        out = parse_perturbation(f"occlude:{fraction}").apply(white, seed=3)
        covered = np.mean(np.all(out == 0, axis=2))
        assert covered == pytest.approx(fraction, abs=0.02)
    rect = np.full((50, 200, 3), 255, np.uint8)
    top, left, h, w = occlusion_box(50, 200, 0.25, seed=1)
    assert (h, w) == (25, 100) and 0 <= top <= 25 and 0 <= left <= 100
    boxes = {occlusion_box(112, 112, 0.2, seed) for seed in range(20)}
    assert len(boxes) > 10
    assert np.mean(parse_perturbation("occlude:0.25").apply(rect) == 0) == pytest.approx(0.25)


def test_gamma_darkens_above_one(face: np.ndarray) -> None:
    assert parse_perturbation("gamma:2").apply(face).mean() < face.mean() < parse_perturbation("gamma:0.5").apply(
        face).mean()
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = parse_perturbation("gamma:2").apply(ramp)
    assert out[8, 0, 0] == round(255 * (128 / 255) ** 2)


def test_chain_order_and_seeds(face: np.ndarray) -> None:
    chain = parse_perturbations(["occlude:0.2", "blur:1"])
    once = apply_perturbations(face, chain, seed=11)
    np.testing.assert_array_equal(once, apply_perturbations(face, chain, seed=11))
    assert not np.array_equal(once, apply_perturbations(face, chain, seed=12))
    assert not np.array_equal(once, apply_perturbations(face, chain[::-1], seed=11))
    described = describe_perturbations(chain, before_detection=True)
    assert described["specs"] == ["occlude:0.2", "blur:1"] and described["applied_to"] == "photo before detection"
    assert set(described["definitions"]) == {"occlude", "blur"}


def test_image_seed_is_stable_per_image() -> None:
    assert image_seed(Path("/a/b/Foo_0001.jpg")) == image_seed(Path("/elsewhere/Foo_0001.jpg"))
    assert image_seed(Path("Foo_0001.jpg")) != image_seed(Path("Foo_0002.jpg"))
    assert image_seed(b"abc") == image_seed(b"abc") != image_seed(b"abd")


@pytest.mark.parametrize(("spec", "message"), [
    ("fog:1", "unknown kind 'fog'"), ("blur", "blur needs a level"), ("blur:", "blur needs a level"),
    ("blur:-1", "0 <= SIGMA <= 112"), ("blur:1e6", "0 <= SIGMA <= 112"),
    ("blur:abc", "SIGMA must be a number, found 'abc'"), ("blur:nan", "finite"),
    ("downscale:0", "PX >= 1"), ("downscale:2.5", "PX must be an integer"), ("jpeg:0", "1 <= QUALITY <= 100"),
    ("jpeg:101", "1 <= QUALITY <= 100"), ("occlude:1.5", "0 <= FRACTION <= 1"), ("gamma:0", "G > 0"),
    ("gray:1", "gray takes no level"),
])
def test_bad_specs_name_the_spec(spec: str, message: str) -> None:
    with pytest.raises(PerturbationSpecError, match="bad perturbation") as err:
        parse_perturbation(spec)
    assert f"'{spec}'" in str(err.value) and message in str(err.value)


def test_apply_refuses_non_rgb() -> None:
    with pytest.raises(ValueError, match="blur:1: expected an RGB uint8"):
        Perturbation("blur", 1.0).apply(np.zeros((8, 8), np.uint8))


def test_motion_and_pixelate_are_seeded_shape_keeping_and_parsed() -> None:
    """The two kinds the fine-tuning never trains on: a line blur at a seeded angle, nearest-neighbour blocks."""
    from marginface.data.perturb import Perturbation, parse_perturbation

    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    motion = parse_perturbation("motion:9")
    assert motion == Perturbation("motion", 9.0)
    assert np.array_equal(motion.apply(face, seed=1), motion.apply(face, seed=1))
    assert not np.array_equal(motion.apply(face, seed=1), motion.apply(face, seed=2))  # another angle
    assert motion.apply(face, seed=1).shape == face.shape
    assert np.array_equal(parse_perturbation("motion:0").apply(face), face)
    pixelated = parse_perturbation("pixelate:14").apply(face)
    assert pixelated.shape == face.shape
    assert len(np.unique(pixelated.reshape(-1, 3), axis=0)) <= 14 * 14  # 14 × 14 blocks of one colour
    assert np.array_equal(parse_perturbation("pixelate:112").apply(face), face)
    for bad in ("motion:-1", "pixelate:0", "pixelate:2.5"):
        with pytest.raises(ValueError, match="bad perturbation"):
            parse_perturbation(bad)


def test_random_degradation_is_reproducible_and_respects_probability() -> None:
    from marginface.data.perturb import PerturbationSpecError, RandomDegradation

    faces = np.random.default_rng(0).integers(0, 256, (16, 112, 112, 3), dtype=np.uint8)
    augment = RandomDegradation({"downscale": (10, 40), "jpeg": (5, 30), "gray": None}, probability=0.5, max_kinds=2)
    first = augment.apply_batch(faces.copy(), np.random.default_rng(7))
    again = augment.apply_batch(faces.copy(), np.random.default_rng(7))
    assert np.array_equal(first, again)
    changed = [not np.array_equal(a, b) for a, b in zip(first, faces, strict=True)]
    assert 0 < sum(changed) < 16
    never = RandomDegradation({"blur": (1, 2)}, probability=0.0)
    assert np.array_equal(never.apply_batch(faces.copy(), np.random.default_rng(0)), faces)
    always = RandomDegradation({"blur": (1, 2)}, probability=1.0)
    assert all(not np.array_equal(a, b) for a, b in zip(always.apply_batch(faces.copy(), np.random.default_rng(0)),
                                                         faces, strict=True))
    chains = [augment.sample(np.random.default_rng(seed)) for seed in range(300)]
    assert {len(chain) for chain in chains} == {0, 1, 2}
    assert all(10 <= p.level <= 40 for chain in chains for p in chain if p.kind == "downscale")
    with pytest.raises(PerturbationSpecError, match="augment kind 'blur': expected a range"):
        RandomDegradation({"blur": (3, 1)})
