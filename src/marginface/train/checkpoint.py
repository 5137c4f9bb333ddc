"""Crash-safe checkpoints: written to a temporary directory, fsynced, checksummed, then renamed.

    checkpoints/step-00000200/
        weights.safetensors   backbone.* and head.weight (class centres in global class order)
        state.pt              optimizer (head rows in global order), schedule, sampler, scaler, RNG, counters
        meta.json             step, world size, sha256 of both files (written last: no meta, no checkpoint)

A failed save (full disk) removes its `*.tmp` directory; a killed one leaves only that directory, never a
damaged `step-*` one, and the next save removes it. A checkpoint whose files do not match their checksums,
or whose state file the safe loader refuses, is skipped with a warning; `load_latest` refuses when every
checkpoint of a run is unusable. Weights files get the umask's mode like every other output (0644 usually).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from marginface.errors import InputError, UsageError
from marginface.fileio import save_safetensors, sha256_file

log = logging.getLogger(__name__)

WEIGHTS, STATE, META = "weights.safetensors", "state.pt", "meta.json"


class CheckpointError(InputError):
    """A checkpoint that cannot be used: damaged, refused by the safe loader, or not of this run's model."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint directory and the step it was taken at."""

    path: Path
    step: int


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str | Path, step: int, weights: dict[str, torch.Tensor], state: dict,
                    extra_meta: dict | None = None, keep: int = 2) -> Path:
    """Atomically write checkpoint `step` under run_dir/checkpoints and prune all but the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    for debris in root.glob("step-*.tmp"):  # left by a killed save: one writer per run, so none is live
        shutil.rmtree(debris, ignore_errors=True)
    try:
        tmp.mkdir()
        save_safetensors({k: v.detach().contiguous().cpu() for k, v in weights.items()}, tmp / WEIGHTS)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        (tmp / STATE).write_bytes(buffer.getvalue())
        for name in (WEIGHTS, STATE):
            _fsync_file(tmp / name)
        meta = {"step": step, "files": {name: sha256_file(tmp / name) for name in (WEIGHTS, STATE)},
                **(extra_meta or {})}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        _fsync_file(tmp / META)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:  # a full disk (or a kill signal turned exception) must not leave the partial copy behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[keep:]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[CheckpointInfo]:
    """Finished checkpoints (not *.tmp), newest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        if path.is_dir() and not path.name.endswith(".tmp"):
            try:
                found.append(CheckpointInfo(path, int(path.name.split("-", 1)[1])))
            except ValueError:
                continue
    return sorted(found, key=lambda c: -c.step)


def verify_checkpoint(path: str | Path) -> str | None:
    """None when the checkpoint is complete and its checksums match, else the reason it is not."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
        files = meta["files"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        return f"no readable {META} ({err})"
    for name, expected in files.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if sha256_file(path / name) != expected:
            return f"{name} does not match its checksum"
    return None


def latest_valid(run_dir: str | Path) -> CheckpointInfo | None:
    """The newest checkpoint that verifies; corrupt ones are skipped with a warning."""
    for info in list_checkpoints(run_dir):
        problem = verify_checkpoint(info.path)
        if problem is None:
            return info
        log.warning("skipping corrupt checkpoint %s: %s", info.path, problem)
    return None


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(weights, state, meta) of a verified checkpoint; raises ValueError naming the problem otherwise
    (checksum mismatch, missing file, a state file the safe loader refuses, unreadable weights)."""
    path = Path(path)
    problem = verify_checkpoint(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} is not usable: {problem}")
    meta = json.loads((path / META).read_text())
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's text suggests weights_only=False: never do that here
        lines = [line for line in str(err).splitlines() if line.strip()
                 and not line.startswith(("Weights only load failed", "Check the documentation"))]
        raise CheckpointError(f"checkpoint {path} is not usable: {STATE} holds objects the safe loader refuses "
                         f"({(lines[0] if lines else type(err).__name__)[:200]})") from err
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"checkpoint {path} is not usable: {STATE} does not load ({err})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not usable: {STATE} holds {type(state).__name__}, not a dict")
    try:
        weights = load_file(str(path / WEIGHTS))
    except Exception as err:  # safetensors raises its own SafetensorError for malformed headers
        raise CheckpointError(f"checkpoint {path} is not usable: {WEIGHTS} does not load ({err})") from err
    return weights, state, meta


def load_latest(run_dir: str | Path) -> tuple[Path, tuple[dict[str, torch.Tensor], dict, dict]] | None:
    """The newest checkpoint of the run that loads, as (path, load_checkpoint(path)); None when the run has
    no checkpoint at all. Unusable ones are skipped with a warning; when every one is unusable, raises
    ValueError listing each checkpoint and why (starting over must then be the user's explicit choice)."""
    found = list_checkpoints(run_dir)
    if not found:
        return None
    problems = []
    for info in found:
        try:
            return info.path, load_checkpoint(info.path)
        except ValueError as err:
            log.warning("skipping %s", err)
            problems.append(f"{info.path.name}: {str(err).split(': ', 1)[-1]}")
    raise CheckpointError(f"no usable checkpoint in {Path(run_dir) / 'checkpoints'}: " + "; ".join(problems)
                     + ". Move them away or train without --resume auto (or with --resume none) to start over")


def refuse_mixing_runs(run_dir: str | Path, resume: str | None) -> None:
    """UsageError when a fresh run (`resume` None or 'none') would land in a folder holding another run's
    checkpoints: a later resume 'auto' would continue the wrong one, and metrics.csv would mix both."""
    if resume not in (None, "none"):
        return
    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir) if run_dir.is_dir() else []
    if found:
        raise UsageError(f"{run_dir} already holds a run (checkpoints up to step {max(c.step for c in found)}): "
                         f"continue it with --resume auto, or train into another folder (--set output_dir=...)")
