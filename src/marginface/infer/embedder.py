"""Embedding models behind one interface: aligned RGB uint8 faces in, raw (unnormalised) embeddings out.

TorchEmbedder wraps any backbone; OnnxEmbedder runs an ONNX embedding model with onnxruntime (CPU), with
its input name, size, layout, channel order and normalisation read from the model or given explicitly,
since released models differ.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import nn

from marginface.data.transforms import to_model_input
from marginface.errors import InputError


class Embedder(Protocol):
    """Anything that turns (B, S, S, 3) RGB uint8 aligned faces into (B, D) float32 embeddings."""

    input_size: int

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Raw embeddings of a batch of aligned faces."""
        ...


def flip_embed(embedder: Embedder, faces: np.ndarray, flip: bool = True) -> np.ndarray:
    """Embeddings of `faces`, plus those of their mirror images when `flip` (the flip test)."""
    out = embedder.embed(faces)
    if flip:
        out = out + embedder.embed(np.ascontiguousarray(faces[:, :, ::-1]))
    return out


class TorchEmbedder:
    """A PyTorch backbone in eval mode, input (x − 127.5) / 127.5 RGB NCHW."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", input_size: int = 112) -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.input_size = input_size

    @torch.no_grad()
    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Raw embeddings (float32)."""
        x = to_model_input(torch.from_numpy(np.ascontiguousarray(faces))).to(self.device)
        return self.model(x).float().cpu().numpy()


@dataclass(frozen=True)
class OnnxInputSpec:
    """How an ONNX embedding model wants its input."""

    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: float = 127.5
    std: float = 127.5


class OnnxEmbedder:
    """An ONNX embedding model on onnxruntime's CPU provider; fixed batch-1 models are run image by image."""

    def __init__(self, path: str | Path, spec: OnnxInputSpec | None = None, input_name: str | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's InvalidProtobuf / Fail derive from Exception only
            reason = " ".join(str(err).split())[:300]
            raise InputError(f"{self.path}: not a valid ONNX model ({reason})") from err
        inputs = self.session.get_inputs()
        chosen = next((i for i in inputs if i.name == input_name), None) if input_name else inputs[0]
        if chosen is None:
            raise InputError(f"{self.path}: no input named {input_name!r}; inputs are {[i.name for i in inputs]}")
        self.input_name = chosen.name
        shape = list(chosen.shape)
        if len(shape) != 4:
            raise InputError(f"{self.path}: expected a 4-D image input, found shape {shape}")
        self.spec = spec or OnnxInputSpec(layout="NHWC" if shape[3] == 3 and shape[1] != 3 else "NCHW")
        size_dims = shape[2:4] if self.spec.layout == "NCHW" else shape[1:3]
        self.input_size = int(size_dims[0]) if isinstance(size_dims[0], int) else 112
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        output = self.session.get_outputs()[0]
        if len(output.shape) != 2:  # a detector's outputs are (1, anchors, values): boxes, not an embedding
            outputs = ", ".join(f"{o.name} {list(o.shape)}" for o in self.session.get_outputs()[:4])
            raise InputError(f"{self.path}: not an image -> embedding model: its first output must be (batch, D), "
                             f"found {outputs}{' ...' if len(self.session.get_outputs()) > 4 else ''} (a face "
                             "detector? give it as --detector)")
        self.output_name = output.name

    def _prepare(self, faces: np.ndarray) -> np.ndarray:
        x = faces.astype(np.float32)
        if self.spec.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - self.spec.mean) / self.spec.std
        if self.spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Raw embeddings (float32)."""
        if faces.shape[1:3] != (self.input_size, self.input_size):
            raise InputError(f"{self.path}: model takes {self.input_size}x{self.input_size} faces, "
                             f"got {faces.shape[1]}x{faces.shape[2]}")
        x = self._prepare(faces)
        if self.fixed_batch and self.fixed_batch != len(x):
            outs = [self.session.run([self.output_name], {self.input_name: x[i:i + 1]})[0] for i in range(len(x))]
            return np.concatenate(outs).astype(np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0].astype(np.float32)


class SerialisedEmbedder:
    """Another embedder whose calls run one at a time (`lock` shared by every copy): for a model whose own
    thread pool already uses every core, where concurrent calls would only oversubscribe them."""

    def __init__(self, embedder: Embedder, lock: threading.Lock) -> None:
        self.embedder = embedder
        self.lock = lock
        self.input_size = embedder.input_size

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Raw embeddings, computed under the shared lock."""
        with self.lock:
            return self.embedder.embed(faces)


def worker_embedder(embedder: Embedder, lock: threading.Lock) -> Embedder:
    """An embedder for one of several workers running at once: a one-thread onnxruntime session on the same
    model (N sessions fill N cores without oversubscribing them); any other embedder (a PyTorch backbone,
    whose intra-op threads are process-wide) shared and serialised under `lock`."""
    if isinstance(embedder, OnnxEmbedder):
        return OnnxEmbedder(embedder.path, embedder.spec, embedder.input_name, threads=1)
    return SerialisedEmbedder(embedder, lock)


def load_embedder(model: str | Path, spec: OnnxInputSpec | None = None, input_name: str | None = None,
                  threads: int | None = None) -> OnnxEmbedder | TorchEmbedder:
    """Any model `marginface eval` accepts: an .onnx file (input spec read from it unless given), an exported
    model directory (model.json + model.safetensors) or a training run directory (its model/ folder)."""
    path = Path(model)
    if path.suffix == ".onnx":
        return OnnxEmbedder(path, spec, input_name, threads)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist (expected an .onnx file, an exported model "
                                "directory or a run directory)")
    return TorchEmbedder(load_model(path))


def load_model(path: str | Path) -> nn.Module:
    """The backbone of an exported model directory or a run directory; InputError for a bad model.json."""
    from marginface.backbones import load

    try:
        return load(model_folder(path))
    except ValueError as err:  # backbones.io raises plain ValueError for a description it cannot read
        raise InputError(str(err)) from err


def model_folder(path: str | Path) -> Path:
    """The exported-model folder of a run directory (RUN/model) or of an exported model directory itself."""
    path = Path(path)
    return path / "model" if (path / "model" / "model.json").is_file() else path
