"""What a gallery store must provide, written down once: the SQLite `Gallery` implements it today, and a server
database (docs/recognition.md, "Design (not built): a PostgreSQL + pgvector backend") would implement the same.

The recognizer, the enrolment plan and the service need only this protocol. Its contract beyond the
signatures: every change is one transaction (all or nothing, never acknowledged before it is durable); a
store bound to one model refuses embeddings and queries of another (GalleryModelMismatch); a damaged
template is never searched past (GalleryDamaged); a store that cannot write says so (GalleryNotWritable,
`write_problem`); a new name (enrol, rename) that reads the same as another identity's (name_spelling) is
refused (LookAlikeName); an old schema is migrated when opened writable and only then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from marginface.infer.faces import FaceResult, ModelFingerprint
from marginface.infer.thresholds import Threshold


@runtime_checkable
class GalleryStore(Protocol):
    """Identities with templates bound to one model: enrol, list, search, check; see the module docstring."""

    path: Path
    fingerprint: ModelFingerprint
    threshold: Threshold
    read_only: str | None
    index_kind: str

    def close(self) -> None:
        """Release the store (its connection)."""

    def write_problem(self) -> str | None:
        """Why a change would fail now, or None (cheap: for health checks)."""

    def check_fingerprint(self, fingerprint: ModelFingerprint | None) -> None:
        """GalleryModelMismatch unless `fingerprint` (when given) is the store's model."""

    def add(self, name: str, embedding: np.ndarray, *, fingerprint: ModelFingerprint | None,
            source_sha256: str | None = None, detection_score: float | None = None,
            allow_shared_photos: bool = False) -> int | None:
        """Add one template to `name` (one transaction); its id, or None when that photo is enrolled already."""

    def enroll(self, name: str, faces: list[tuple[FaceResult, str | None]], fingerprint: ModelFingerprint | None,
               *, allow_shared_photos: bool = False, photo_names: list[str] | None = None) -> int:
        """Add faces (with their photo's sha256) to `name` in one transaction; how many were new."""

    def remove(self, name: str) -> None:
        """Delete an identity and its templates (one transaction)."""

    def rename(self, old: str, new: str) -> None:
        """Rename an identity (one transaction)."""

    def identities(self) -> list:
        """Every identity with its template count (IdentityInfo)."""

    def stats(self) -> dict:
        """Counts, model, detector, threshold and index kind."""

    def search(self, embeddings: np.ndarray, k: int = 5, fingerprint: ModelFingerprint | None = None) -> list:
        """Top-k identities per query embedding (Match lists, best first)."""

    def identify_faces(self, faces: list[FaceResult], k: int = 1,
                       fingerprint: ModelFingerprint | None = None) -> list:
        """Decisions for faces (Identified): the top match when it passes the threshold, else unknown."""

    def check(self) -> list:
        """The damaged templates (DamagedTemplate), none when intact."""

    def drop_templates(self, template_ids: list[int]) -> int:
        """Delete damaged templates by id (one transaction); how many were deleted."""

    def verified_templates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        """(template ids, owner ids, unit vectors, owner id -> name), every one verified."""
