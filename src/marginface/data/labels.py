"""The label map: which identity name each integer label stands for, one format for every data set.

File `labels.json` (UTF-8): a JSON object from the label, as a decimal string, to the identity name,
{"0": "Aaron_Eckhart", "1": "Abel_Pacheco", ...}, with keys exactly "0" .. str(C − 1). JSON holds any
name (TAB, newline, non-ASCII) without escaping rules of its own. `data pack` writes it beside train.rec;
training writes it into every run directory, whatever the data (folder, RecordIO, synthetic).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from marginface.errors import InputError
from marginface.listing import first_of

LABELS_NAME = "labels.json"
LEGACY_LABELS_NAME = "labels.tsv"  # what `data pack` wrote before labels.json: one "label<TAB>name" line per class


def write_class_names(path: str | Path, names: Sequence[str]) -> Path:
    """Write `names` (index = label) as the label map at `path`; returns the path."""
    path = Path(path)
    text = json.dumps({str(label): str(name) for label, name in enumerate(names)}, indent=1, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def read_class_names(path: str | Path) -> list[str]:
    """The names of a label map written by write_class_names; ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InputError(f"{path}: not a label map (JSON object label -> name): {err}") from err
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise InputError(f"{path}: not a label map (expected a JSON object of label -> name strings)")
    expected = [str(label) for label in range(len(mapping))]
    if sorted(mapping, key=lambda k: (len(k), k)) != expected:
        raise InputError(f"{path}: labels must be exactly 0..{len(mapping) - 1}, found keys "
                         f"{first_of([repr(key) for key in sorted(mapping)], 5, ', ')}")
    return [mapping[key] for key in expected]


def default_class_names(num_classes: int) -> list[str]:
    """Names for data that carries none (an insightface pack without labels.json): the label itself."""
    return [str(label) for label in range(num_classes)]


def read_legacy_class_names(path: str | Path) -> list[str]:
    """The names in an older pack's labels.tsv ("label<TAB>name" lines, labels 0..C − 1 in order)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err})") from err
    while lines and not lines[-1].strip():  # trailing blank lines carry no class
        lines.pop()
    names = []
    for number, line in enumerate(lines, 1):
        label, tab, name = line.partition("\t")
        if not tab or label != str(len(names)):
            raise InputError(f"{path} line {number}: expected '{len(names)}<TAB>name', found {line[:80]!r}")
        names.append(name)
    return names


def find_pack_class_names(folder: str | Path, num_classes: int) -> tuple[list[str], Path | None]:
    """(names, file they came from) for a pack in `folder`: labels.json, else an older pack's labels.tsv, else
    the labels themselves (file None). A folder or broken link in the label file's place is an error."""
    for name, read in ((LABELS_NAME, read_class_names), (LEGACY_LABELS_NAME, read_legacy_class_names)):
        path = Path(folder) / name
        if path.exists() or path.is_symlink():
            return read(path), path
    return default_class_names(num_classes), None
