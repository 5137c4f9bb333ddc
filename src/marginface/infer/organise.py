"""Organise a gallery's faces into people: the one place that decides how a clustering run goes, for the CLI
and the service alike.

A run reads the gallery's assignments (every face, its person, the user's placements and 'not this person'
marks), decides, and writes the result back in one transaction (People.apply_clustering, which never moves
a face a user placed nor breaks a mark):

1. Faces in no person yet are matched to the **named** people first: a face whose best template score
   passes the gallery's identify threshold goes to that person (as identify would name it).
2. **Incremental** (the default): the remaining new faces join existing people or form new ones through
   marginface.cluster.assign_incremental, which looks only at the new faces' neighbourhoods; nobody already
   placed is moved. **Full** (`full=True`): every face a user did not place is clustered again with
   marginface.cluster.cluster_embeddings, the user's placements fixed; cluster ids stay stable by overlap.

The clustering settings (method, cut, smallest cluster) are stored in the gallery on the first run, so later
incremental runs, the CLI and the service cut at the same place; a run given other settings stores those.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from marginface.cluster import assign_incremental, cluster_embeddings
from marginface.cluster.algorithms import check_method
from marginface.errors import UsageError
from marginface.infer.people import Assignments, ClusteringApplied, People, StaleAssignments
from marginface.infer.published import published
from marginface.infer.thresholds import Threshold, ThresholdError, published_threshold

log = logging.getLogger(__name__)
DEFAULT_METHOD = "average"
DEFAULT_MIN_SIZE = 1  # every face gets a person (a one-face cluster is a person seen once); lists sort by size
MAX_MIN_SIZE = 1000  # a larger smallest cluster leaves nearly every face of a collection unassigned
SETTINGS_KEY = "clustering"


@dataclass(frozen=True)
class ClusterSettings:
    """How a gallery's faces are clustered: the method, the cosine cut and the smallest cluster kept."""

    method: str
    threshold: Threshold
    min_size: int = DEFAULT_MIN_SIZE

    def to_dict(self) -> dict:
        """JSON-ready dict (stored in the gallery's meta table)."""
        return {"method": self.method, "threshold": self.threshold.to_dict(), "min_size": self.min_size}

    @classmethod
    def from_dict(cls, data: dict) -> ClusterSettings:
        """Inverse of to_dict."""
        return cls(str(data["method"]), Threshold.from_dict(data["threshold"]), int(data["min_size"]))


@dataclass
class OrganiseReport:
    """What one run did: how many faces it looked at and placed, and where they went."""

    mode: str  # "incremental" or "full"
    settings: ClusterSettings
    faces: int = 0  # faces with an embedding in the gallery
    considered: int = 0  # faces the run was free to place
    to_named: int = 0  # of those, matched to a named person by the identify threshold
    applied: ClusteringApplied | None = None
    seconds: float = 0.0
    people: dict = field(default_factory=dict)  # counts after the run

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"mode": self.mode, "settings": self.settings.to_dict(), "faces": self.faces,
                "considered": self.considered, "to_named": self.to_named,
                "applied": self.applied.to_dict() if self.applied is not None else None,
                "seconds": self.seconds, "people": self.people}


def stored_settings(people: People) -> ClusterSettings | None:
    """The settings the gallery's earlier runs used, or None before its first run."""
    text = people.setting(SETTINGS_KEY)
    if text is None:
        return None
    try:
        return ClusterSettings.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as err:
        raise ThresholdError(f"gallery {people.path}: stored clustering settings unreadable ({err}): {text!r}") from err


def check_min_size(value: object, what: str = "min_size", hint: str = "") -> int:
    """`value` as the smallest cluster kept: an integer from 1 to MAX_MIN_SIZE, else UsageError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MIN_SIZE:
        raise UsageError(f"{what} is {value!r}; the smallest cluster kept must be a whole number of faces from 1 "
                         f"to {MAX_MIN_SIZE}{hint}")
    return value


def resolve_settings(people: People, *, threshold: Threshold | None = None, method: str | None = None,
                     min_size: int | None = None) -> ClusterSettings:
    """The settings a run uses: those given, else the gallery's stored ones (its earlier runs), else the
    defaults: the cut shipped for the auto model, which any other model must be given on its first run."""
    stored = stored_settings(people)
    if threshold is None and stored is not None:
        threshold = stored.threshold
    elif threshold is None and people.gallery.fingerprint.weights_sha256 == published()["model"]["sha256"]:
        threshold = published_threshold("cluster")
    elif threshold is None:
        raise ThresholdError(f"gallery {people.path} has not been clustered yet and its model is not the auto "
                             "model, so there is no clustering cut to use: give one (--threshold T, or --report "
                             "REPORT.json --far F from `marginface eval` of that model)")
    method = method or (stored.method if stored is not None else DEFAULT_METHOD)
    check_method(method)
    if min_size is not None:
        size = check_min_size(min_size)
    elif stored is not None:
        size = check_min_size(stored.min_size, f"gallery {people.path}: the stored clustering min_size",
                              " (a run given --min-size / min_size stores another)")
    else:
        size = DEFAULT_MIN_SIZE
    return ClusterSettings(method, threshold, size)


def _match_named(people: People, state: Assignments, free: np.ndarray) -> np.ndarray:
    """Labels (person index, or -1) of the free faces whose best named match passes the identify threshold."""
    gallery = people.gallery
    out = np.full(len(free), -1, np.int64)
    if len(free) == 0 or len(gallery) == 0:
        return out
    label_of = {p.name: k for k, p in enumerate(state.persons) if p.kind == "named"}
    cannot = set(state.cannot_link)
    for row, matches in enumerate(gallery.search(state.embeddings[free], k=1)):
        if matches and gallery.threshold.accepts(matches[0].score):
            label = label_of.get(matches[0].name, -1)
            if label >= 0 and (int(free[row]), label) not in cannot:
                out[row] = label
    return out


ATTEMPTS = 3  # a user decision committed while a run computes makes it start again from a fresh snapshot


def organise(people: People, *, threshold: Threshold | None = None, method: str | None = None,
             min_size: int | None = None, full: bool = False) -> OrganiseReport:
    """Place the gallery's faces into people (see the module docstring); one transaction, user decisions kept:
    a decision committed while the run computes (another process naming, merging or splitting) makes it start
    again from a fresh snapshot, up to ATTEMPTS times (then StaleAssignments)."""
    started = time.perf_counter()
    settings = resolve_settings(people, threshold=threshold, method=method, min_size=min_size)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            report = _run(people, settings, full)
            break
        except StaleAssignments:
            if attempt == ATTEMPTS:
                raise
            log.info("gallery %s: a user decision landed during the clustering run; running again", people.path)
    report.seconds = time.perf_counter() - started
    log.info("gallery %s: %s clustering (%s at %.4f): %d faces considered, %d to named people, %d moved, "
             "%d new clusters in %.1f s", people.path, report.mode, settings.method, settings.threshold.value,
             report.considered, report.to_named, report.applied.moved, len(report.applied.new_clusters),
             report.seconds)
    return report


def _consistent_marks(state: Assignments) -> list[tuple[int, int]]:
    """The cannot-links, less any that forbid a face the person a user fixed it to (an inconsistent store:
    the user's placement is the later word), each such one logged."""
    kept = []
    for face, label in state.cannot_link:
        if state.fixed[face] == label:
            log.warning("face %d is placed in %s by the user and also marked 'not' them; the placement wins",
                        int(state.face_ids[face]), state.persons[label].ref)
        else:
            kept.append((face, label))
    return kept


def _run(people: People, settings: ClusterSettings, full: bool) -> OrganiseReport:
    """One attempt: snapshot, decide, apply (StaleAssignments when a decision landed in between)."""
    state = people.assignments()
    state.cannot_link = _consistent_marks(state)
    report = OrganiseReport("full" if full else "incremental", settings, faces=len(state.face_ids))
    cut = settings.threshold.value
    fixed = state.fixed.copy()
    free = np.flatnonzero(fixed < 0) if full else np.flatnonzero(state.labels < 0)
    named = _match_named(people, state, free)
    report.to_named = int((named >= 0).sum())
    report.considered = len(free)
    if full:
        fixed[free[named >= 0]] = named[named >= 0]  # as if placed: the clustering keeps them there
        labels = cluster_embeddings(state.embeddings, method=settings.method, threshold=cut,
                                    min_size=settings.min_size, fixed=fixed, cannot_link=state.cannot_link)
        written = np.flatnonzero(state.fixed < 0)
        known = np.unique(fixed[fixed >= 0])  # labels that stand for a person; the others match by overlap
    else:
        labels = state.labels.copy()
        labels[free] = named
        rest = free[named < 0]
        placed = np.flatnonzero(labels >= 0)
        known = np.unique(labels[placed])
        if len(rest):
            position = {int(face): row for row, face in enumerate(rest)}
            cannot = [(position[f], label) for f, label in state.cannot_link if f in position]
            labels[rest] = assign_incremental(state.embeddings[placed], labels[placed], state.embeddings[rest],
                                              threshold=cut, method=settings.method, cannot_link=cannot,
                                              min_size=settings.min_size)
        written = free  # nobody already placed moves; new labels (above every known one) become new clusters
    targets = {int(label): state.persons[int(label)] for label in known}
    meta = {SETTINGS_KEY: json.dumps(settings.to_dict())}
    report.applied = people.apply_clustering(state.face_ids[written], labels[written], targets=targets, meta=meta,
                                             decisions=state.decisions)
    report.people = people.counts()
    return report
