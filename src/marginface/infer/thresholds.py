"""Operating thresholds with their provenance: a fixed value, or one calibrated in an eval report.

A Threshold's `value` is the lowest cosine score accepted: score >= value means "same person" (verify) or
"known" (identify). `source` says where it came from, and every decision carries its Threshold.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from marginface.errors import InputError, UsageError


class ThresholdError(UsageError):
    """A threshold cannot be read from a report: missing file, set, FAR/FPIR or an old report format."""


class ScoreError(InputError):
    """A score no cosine of unit vectors can be (not finite, or outside [-1, 1]): an input or a stored template
    is damaged, so no decision may be made from it."""


SCORE_TOLERANCE = 1e-5  # float32 rounding of unit vectors moves a cosine past ±1 by ~1e-7, never by this much


def check_score(score: float) -> float:
    """`score` as a float, or ScoreError when it is not finite or lies outside [-1, 1] (beyond rounding)."""
    value = float(score)
    if not math.isfinite(value) or abs(value) > 1.0 + SCORE_TOLERANCE:
        raise ScoreError(f"score {value!r} is not a cosine (outside [-1, 1]): an embedding or stored template "
                         "is damaged; no decision is made from it")
    return value


@dataclass(frozen=True)
class Threshold:
    """Cosine-score threshold (score >= value accepts) and where it came from."""

    value: float
    source: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ThresholdError(f"threshold value must be finite, got {self.value} ({self.source})")

    @classmethod
    def fixed(cls, value: float) -> Threshold:
        """A threshold the user chose by hand."""
        value = float(value)
        if not -1.0 <= value <= 1.0:
            raise ThresholdError(f"a cosine threshold lies in [-1, 1], got {value}")
        return cls(value, "fixed")

    @classmethod
    def from_report(cls, path: str | Path, *, far: float | None = None, fpir: float | None = None,
                    set_name: str | None = None) -> Threshold:
        """The threshold `marginface eval --out` calibrated: at a FAR (verification set), at an FPIR
        (identification set) or, with neither, the best-accuracy threshold of the verification set."""
        if far is not None and fpir is not None:
            raise ThresholdError("give far or fpir, not both")
        path = Path(path)
        try:
            report = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ThresholdError(f"eval report {path} does not exist") from err
        except (OSError, json.JSONDecodeError) as err:
            raise ThresholdError(f"{path}: not a readable eval report.json ({err})") from err
        if fpir is not None:
            sets = report.get("identification") or {}
            name, entry = _pick(path, "identification", list(sets.items()), set_name)
            return cls(_lookup(path, name, entry, "threshold_at_fpir", fpir, "FPIR"),
                       f"report {path}: {name} FPIR {fpir:g}")
        sets = [(v.get("name", f"set{i}"), v) for i, v in enumerate(report.get("verification") or [])]
        name, entry = _pick(path, "verification", sets, set_name)
        if far is not None:
            return cls(_lookup(path, name, entry, "threshold_at_far", far, "FAR"), f"report {path}: {name} FAR {far:g}")
        if "accuracy_threshold" not in entry:
            raise ThresholdError(f"{path}: verification set {name!r} has no accuracy_threshold (report written "
                                 "before thresholds were stored: rerun marginface eval --out)")
        return cls(float(entry["accuracy_threshold"]), f"report {path}: {name} best accuracy")

    @classmethod
    def resolve(cls, task: str, *, value: Threshold | float | None = None, report: str | Path | None = None,
                far: float | None = None, fpir: float | None = None, set_name: str | None = None,
                model: str | Path = "auto", required: bool = True) -> Threshold | None:
        """The operating threshold for `task` ('verify' or 'identify'), decided here for the CLI, FaceRecognizer
        and (through the gallery it is stored in) the service.

        Args:
            task: which shipped threshold model 'auto' uses: 'verify' (at a FAR), 'identify' (at an FPIR) or
                'cluster' (the clustering cut, at a FAR of an all-pairs report).
            value: a fixed threshold (a number in [-1, 1], or a Threshold kept as it is).
            report: an eval report.json; with `far` or `fpir` (one is required) its calibrated threshold.
            set_name: which evaluated set of the report, when it holds several.
            model: the model the threshold is for; only 'auto' ships calibrated thresholds.
            required: when nothing is given for a model other than 'auto', raise (True) or return None.
        """
        if value is not None:
            if report is not None or far is not None or fpir is not None:
                raise ThresholdError("give either a fixed threshold (--threshold) or a report with a FAR/FPIR "
                                     "(--report --far/--fpir), not both")
            return value if isinstance(value, Threshold) else cls.fixed(value)
        if report is not None:
            if far is None and fpir is None:
                raise ThresholdError("a report needs the rate to operate at: --far" +
                                     (" or --fpir" if task == "identify" else ""))
            return cls.from_report(report, far=far, fpir=fpir, set_name=set_name)
        if far is not None or fpir is not None:
            raise ThresholdError("--far/--fpir need --report (the eval report.json that calibrates them)")
        if str(model) == "auto":
            return published_threshold(task)
        if not required:
            return None
        raise ThresholdError(f"no threshold for model {model}: give --report REPORT.json --far/--fpir (from "
                             "`marginface eval MODEL ... --out DIR`) or --threshold T; only --model auto ships "
                             "calibrated thresholds")

    def accepts(self, score: float) -> bool:
        """Whether `score` passes: score >= value; ScoreError for a score outside [-1, 1] or not finite."""
        return check_score(score) >= self.value

    def to_dict(self) -> dict:
        """JSON-ready {"value", "source"}."""
        return {"value": self.value, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> Threshold:
        """Inverse of to_dict."""
        return cls(float(data["value"]), str(data["source"]))


def published_threshold(task: str) -> Threshold:
    """The calibrated threshold shipped for the auto model: task 'verify' (FAR) or 'identify' (FPIR)."""
    shipped = json.loads(resources.files("marginface.infer").joinpath("published.json").read_text())
    entry = shipped.get("thresholds", {}).get(task)
    if entry is None:
        raise ThresholdError(f"no calibrated {task!r} threshold is shipped for model 'auto'")
    return Threshold(float(entry["value"]), f"{entry['source']} (shipped with marginface)")


def _pick(path: Path, kind: str, sets: list[tuple[str, dict]], set_name: str | None) -> tuple[str, dict]:
    names = [name for name, _ in sets]
    if not sets:
        raise ThresholdError(f"{path}: the report has no {kind} results")
    if set_name is None:
        if len(sets) > 1:
            raise ThresholdError(f"{path}: several {kind} sets {names}; choose one with set_name")
        return sets[0]
    for name, entry in sets:
        if name == set_name:
            return name, entry
    raise ThresholdError(f"{path}: no {kind} set named {set_name!r}; the report has {names}")


def _lookup(path: Path, name: str, entry: dict, field: str, rate: float, label: str) -> float:
    table = entry.get(field)
    if table is None:
        raise ThresholdError(f"{path}: set {name!r} has no {field} (report written before thresholds were "
                             "stored: rerun marginface eval --out)")
    key = f"{rate:g}"
    if key not in table:
        raise ThresholdError(f"{path}: set {name!r} has no threshold for {label} {key}; available: {sorted(table)}")
    if table[key] is None:
        notes = entry.get("far_notes") or entry.get("fpir_notes") or {}
        raise ThresholdError(f"{path}: set {name!r}: {label} {key} was not measurable on that set "
                             f"({notes.get(key, 'too few samples')})")
    return float(table[key])
