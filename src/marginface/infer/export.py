"""ONNX export of a backbone: dynamic batch, input 'input' (B, 3, 112, 112) in [−1, 1], output 'embedding'."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from marginface.errors import MarginfaceError

log = logging.getLogger(__name__)


class ExportMismatch(MarginfaceError, RuntimeError):
    """The exported ONNX model's embeddings differ from PyTorch's by more than the tolerance asked for."""


def export_onnx(model: nn.Module, path: str | Path, input_size: int = 112, opset: int = 17,
                check_tolerance: float | None = 1e-4) -> Path:
    """Write `model` as ONNX and, unless check_tolerance is None, verify onnxruntime's output against
    PyTorch's on random input (max abs difference ≤ tolerance) before returning the path."""
    return _export(model, path, input_size, opset, check_tolerance)[0]


def export_onnx_checked(model: nn.Module, path: str | Path, input_size: int = 112, opset: int = 17,
                        check_tolerance: float = 1e-4) -> tuple[Path, float]:
    """export_onnx that always checks, returning (path, max |ONNX − PyTorch|) so callers can report the
    difference without running both models again."""
    path, difference = _export(model, path, input_size, opset, check_tolerance)
    return path, float(difference)  # a tolerance was given, so the difference was measured


def _export(model: nn.Module, path: str | Path, input_size: int, opset: int,
            check_tolerance: float | None) -> tuple[Path, float | None]:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; the ONNX export needs a file path, e.g. {path / 'model.onnx'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    example = torch.rand(2, 3, input_size, input_size) * 2 - 1
    tmp = path.with_suffix(".onnx.tmp")
    try:
        # The TorchScript exporter needs no extra package (the dynamo one needs onnxscript); silence its notice.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # imported ONNX graphs read shape values as Python numbers; the parity check below catches a bad trace
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["embedding"],
                              dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
        difference = None
        if check_tolerance is not None:
            difference = max_abs_difference(model, tmp, input_size)
            if difference > check_tolerance:
                raise ExportMismatch(f"ONNX export of {path.name} differs from PyTorch by {difference:.3g} "
                                   f"(tolerance {check_tolerance})")
        tmp.replace(path)
        log.info("exported %s (max |ONNX − PyTorch| = %s)", path, "unchecked" if difference is None
                 else f"{difference:.2e}")
        return path, difference
    except BaseException:  # no half-written or unchecked file is left behind
        tmp.unlink(missing_ok=True)
        raise


def max_abs_difference(model: nn.Module, onnx_path: str | Path, input_size: int = 112, batch: int = 3) -> float:
    """Largest |onnxruntime − PyTorch| over the embeddings of a random batch."""
    import onnxruntime as ort

    x = torch.rand(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.max(np.abs(got - expected)))
