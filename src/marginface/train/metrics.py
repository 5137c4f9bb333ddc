"""A run's scalars: rows of run_dir/metrics.csv and, when tensorboard is installed, TensorBoard scalars."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

FIELDS = ["kind", "step", "epoch", "name", "value"]


class MetricsWriter:
    """Appends (kind, step, epoch, name, value) rows to metrics.csv and `kind/name` scalars to
    run_dir/tensorboard. The CSV is opened per write; the TensorBoard writer is opened on the first write
    and released by `close` (also a context manager, so a run that stops on an error still flushes it).
    A writer that is not `enabled` (ranks other than 0) writes nothing."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tensorboard = None  # None: not opened yet; False: tensorboard is not installed

    def write(self, kind: str, step: int, values: dict[str, float], epoch: int | None = None) -> None:
        """One row per value; `epoch` is left empty when not given (evaluation rows)."""
        if not self.enabled:
            return
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            for name, value in values.items():
                writer.writerow({"kind": kind, "step": step, "epoch": "" if epoch is None else epoch,
                                 "name": name, "value": value})
        tensorboard = self._open_tensorboard()
        if tensorboard:
            for name, value in values.items():
                tensorboard.add_scalar(f"{kind}/{name}", value, step)
            tensorboard.flush()  # on disk now, also for a write after close (an evaluate() after train())

    def _open_tensorboard(self):
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self._tensorboard = False
                log.info("tensorboard is not installed: scalars go to metrics.csv only")
        return self._tensorboard

    def close(self) -> None:
        """Flush and release the TensorBoard writer (a later write opens it again)."""
        if self._tensorboard:
            self._tensorboard.close()
            self._tensorboard = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Throughput:
    """Images per second since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window now."""
        self.started = time.perf_counter()
        self.images = 0

    def add(self, images: int) -> None:
        """Count `images` processed in this window."""
        self.images += images

    def rate(self) -> float:
        """Images per second over the window so far (0 when no time has passed)."""
        elapsed = time.perf_counter() - self.started
        return self.images / elapsed if elapsed > 0 else 0.0
