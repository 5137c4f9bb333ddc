"""Procedural synthetic identities: the embedded default data for demos, tests and CI.

Each identity is a fixed random face layout (shape, skin, eyes, brows, nose, mouth, hair) plus a fixed
low-frequency skin texture; each sample of it varies pose (rotation, scale, shift), expression, lighting,
noise and occlusion. Identity is therefore stable and learnable while no two samples are alike, and
verification on identities never seen in training is meaningful. Everything is a pure function of
(seed, identity, sample index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from torch.utils.data import Dataset

from marginface.data.image import FACE_SIZE
from marginface.data.pairs import PairSet
from marginface.data.samples import Sample
from marginface.errors import UsageError
from marginface.seeding import stream

_SIZE = FACE_SIZE


@dataclass(frozen=True)
class FaceLayout:
    """The stable structure of one synthetic identity."""

    skin: np.ndarray
    background: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    face_axes: tuple[float, float]
    eye_y: float
    eye_dx: float
    eye_size: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    mouth_curve: float
    hairline: float
    texture: np.ndarray  # (112, 112, 3) float32 in about [−1, 1]


def identity_layout(seed: int, identity: int) -> FaceLayout:
    """The layout of `identity` under `seed`."""
    r = stream(seed, identity, 0x1D)
    coarse = r.normal(0.0, 1.0, (5, 5, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (_SIZE, _SIZE), interpolation=cv2.INTER_CUBIC)
    return FaceLayout(
        skin=r.uniform(90, 230, 3), background=r.uniform(0, 255, 3), hair=r.uniform(0, 200, 3),
        iris=r.uniform(0, 200, 3), face_axes=(r.uniform(30, 42), r.uniform(40, 52)),
        eye_y=r.uniform(46, 56), eye_dx=r.uniform(14, 22), eye_size=r.uniform(4, 8), brow_tilt=r.uniform(-0.3, 0.3),
        nose_len=r.uniform(10, 22), nose_w=r.uniform(4, 10), mouth_y=r.uniform(78, 90), mouth_w=r.uniform(10, 22),
        mouth_curve=r.uniform(-5, 5), hairline=r.uniform(18, 34), texture=texture,
    )


def render_face(layout: FaceLayout, seed: int, identity: int, index: int) -> np.ndarray:
    """One RGB uint8 112×112 sample of the identity with the given layout."""
    r = stream(seed, identity, index, 0x5A)
    img = np.empty((_SIZE, _SIZE, 3), np.float32)
    img[:] = 0.5 * layout.background + 0.5 * r.uniform(0, 255, 3)
    cx, cy = 56.0, 60.0
    ax, ay = layout.face_axes
    aa = cv2.LINE_AA
    cv2.ellipse(img, (int(cx), int(cy - 8)), (int(ax + 4), int(ay)), 0, 180, 360, layout.hair.tolist(), -1, aa)
    cv2.ellipse(img, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, layout.skin.tolist(), -1, aa)
    face_mask = np.zeros((_SIZE, _SIZE), np.float32)
    cv2.ellipse(face_mask, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, 1.0, -1, aa)
    img += (face_mask[..., None] * layout.texture * 28.0)
    hair_top = int(cy - ay + layout.hairline)
    cv2.rectangle(img, (int(cx - ax), int(cy - ay - 4)), (int(cx + ax), hair_top), layout.hair.tolist(), -1)
    openness = r.uniform(0.5, 1.0)
    for side in (-1, 1):
        ex, ey = cx + side * layout.eye_dx, layout.eye_y
        s = layout.eye_size
        cv2.ellipse(img, (int(ex), int(ey)), (int(s * 1.6), max(1, int(s * openness))), 0, 0, 360,
                    (245, 245, 245), -1, aa)
        cv2.circle(img, (int(ex), int(ey)), max(1, int(s * 0.7 * openness)), layout.iris.tolist(), -1, aa)
        bx = ex - side * s * 1.8
        tilt = side * layout.brow_tilt * 10
        cv2.line(img, (int(bx), int(ey - s * 2 + tilt)), (int(ex + side * s * 1.8), int(ey - s * 2 - tilt)),
                 (layout.hair * 0.6).tolist(), 2, aa)
    nose = np.array([[cx, layout.eye_y + 4], [cx - layout.nose_w, layout.eye_y + 4 + layout.nose_len],
                     [cx + layout.nose_w, layout.eye_y + 4 + layout.nose_len]], np.int32)
    cv2.polylines(img, [nose], True, (layout.skin * 0.7).tolist(), 2, aa)
    curve = layout.mouth_curve + r.uniform(-3, 3)
    xs = np.linspace(-layout.mouth_w, layout.mouth_w, 9)
    mouth = np.stack([cx + xs, layout.mouth_y + curve * (1 - (xs / layout.mouth_w) ** 2)], 1).astype(np.int32)
    cv2.polylines(img, [mouth], False, (120, 40, 50), 3, aa)

    angle, scale = r.uniform(-10, 10), r.uniform(0.92, 1.08)
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[:, 2] += r.uniform(-4, 4, 2)
    img = cv2.warpAffine(img, m, (_SIZE, _SIZE), borderMode=cv2.BORDER_REFLECT)
    gradient = np.linspace(-1, 1, _SIZE, dtype=np.float32)
    direction = r.uniform(0, 2 * math.pi)
    light = (math.cos(direction) * gradient[None, :] + math.sin(direction) * gradient[:, None]) * r.uniform(0, 30)
    img = img * r.uniform(0.8, 1.2) + r.uniform(-30, 30) + light[..., None]
    img += r.normal(0, r.uniform(2, 8), img.shape).astype(np.float32)
    if r.random() < 0.25:
        w, h = r.integers(18, 40, 2)
        x0, y0 = r.integers(0, _SIZE - w), r.integers(0, _SIZE - h)
        img[y0:y0 + h, x0:x0 + w] = r.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_face(seed: int, identity: int, index: int) -> np.ndarray:
    """Sample `index` of `identity` (RGB uint8 112×112)."""
    return render_face(identity_layout(seed, identity), seed, identity, index)


class SyntheticFaces(Dataset):
    """`num_identities` × `samples_per_identity` synthetic faces; labels 0..num_identities−1.

    `first_identity` shifts which identities are drawn, so a held-out set never overlaps the training one.
    """

    def __init__(self, num_identities: int, samples_per_identity: int, seed: int = 0, first_identity: int = 0) -> None:
        if num_identities < 1 or samples_per_identity < 1:
            raise UsageError(f"need >= 1 identity and sample, got {num_identities}, {samples_per_identity}")
        self.num_identities = num_identities
        self.samples_per_identity = samples_per_identity
        self.seed = seed
        self.first_identity = first_identity
        self._layouts: dict[int, FaceLayout] = {}

    @property
    def num_classes(self) -> int:
        """Number of identities (labels)."""
        return self.num_identities

    @property
    def class_names(self) -> list[str]:
        """`synthetic_<identity>` for each label (identities start at `first_identity`)."""
        return [f"synthetic_{self.first_identity + label}" for label in range(self.num_identities)]

    def __len__(self) -> int:
        return self.num_identities * self.samples_per_identity

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        label, sample = divmod(index, self.samples_per_identity)
        identity = self.first_identity + label
        layout = self._layouts.get(identity)
        if layout is None:
            layout = self._layouts[identity] = identity_layout(self.seed, identity)
        return Sample(render_face(layout, self.seed, identity, sample), label)


def synthetic_pairs(num_identities: int = 200, pairs_per_fold: int = 30, num_folds: int = 10, seed: int = 0,
                    first_identity: int = 1_000_000) -> PairSet:
    """A verification set of synthetic identities disjoint from training (ids from `first_identity`):
    per fold `pairs_per_fold` same and `pairs_per_fold` different pairs, like LFW's layout."""
    r = stream(seed, first_identity, 0xAB)
    images: list[np.ndarray] = []
    pairs, issame, folds = [], [], []
    sample_counter: dict[int, int] = {}

    def new_image(identity: int) -> int:
        count = sample_counter.get(identity, 0)
        sample_counter[identity] = count + 1
        images.append(synthetic_face(seed, first_identity + identity, 1000 + count))
        return len(images) - 1

    for fold in range(num_folds):
        for same in (True, False):
            for _ in range(pairs_per_fold):
                a = int(r.integers(num_identities))
                b = a if same else int((a + 1 + r.integers(num_identities - 1)) % num_identities)
                pairs.append((new_image(a), new_image(b)))
                issame.append(same)
                folds.append(fold)
    return PairSet("synthetic", images, np.asarray(pairs, np.int64), np.asarray(issame, bool),
                   np.asarray(folds, np.int64), {"seed": seed, "first_identity": first_identity})
