"""The value types recognition passes around: a face found in a photo, the fingerprint of the model that embedded
it, a 1:1 decision, and the error for a photo without a face. A leaf module: recognizer and gallery both import
it, neither imports the other at load time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from marginface.errors import InputError
from marginface.infer.thresholds import Threshold


class NoFaceError(InputError):
    """An image in which the detector found no face; the message names the image."""

    http_status = 422


@dataclass(frozen=True)
class ModelFingerprint:
    """What makes embeddings comparable: the weights' sha256 and how faces are fed to the model."""

    weights_sha256: str
    input_size: int
    layout: str
    channels: str
    mean: float
    std: float
    embedding_dim: int

    @property
    def key(self) -> str:
        """A stable string; two models give comparable embeddings only when their keys are equal."""
        return (f"sha256={self.weights_sha256};size={self.input_size};layout={self.layout};"
                f"channels={self.channels};mean={self.mean:g};std={self.std:g};dim={self.embedding_dim}")

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict) -> ModelFingerprint:
        """Inverse of to_dict."""
        return cls(str(data["weights_sha256"]), int(data["input_size"]), str(data["layout"]),
                   str(data["channels"]), float(data["mean"]), float(data["std"]), int(data["embedding_dim"]))


@dataclass
class FaceResult:
    """One face in one photo: where it is, how good it looks, and its unit embedding."""

    box: tuple[float, float, float, float]  # x, y, w, h in original image pixels
    landmarks: np.ndarray  # (5, 2) in original image pixels
    detection_score: float
    embedding: np.ndarray  # (D,) float32, unit norm
    raw_norm: float  # norm of the model's raw output (flip-averaged); low = poor face
    face_size: float  # min(w, h) in pixels

    def to_dict(self, embedding: bool = False) -> dict:
        """JSON-ready dict; the embedding only when asked."""
        out = {"box": [float(v) for v in self.box], "landmarks": np.asarray(self.landmarks, float).tolist(),
               "detection_score": float(self.detection_score), "raw_norm": float(self.raw_norm),
               "face_size": float(self.face_size)}
        if embedding:
            out["embedding"] = self.embedding.astype(float).tolist()
        return out


@dataclass
class Verification:
    """A 1:1 decision: cosine score of two main faces, same or not, and the threshold that decided."""

    score: float
    same: bool
    threshold: Threshold

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"score": self.score, "same": self.same, "threshold": self.threshold.to_dict()}


def main_face(faces: Sequence[FaceResult], label: str) -> FaceResult:
    """The face a photo is of, from its faces as found (main face first); NoFaceError naming `label` when none."""
    if not faces:
        raise NoFaceError(f"{label}: no face found")
    return faces[0]
