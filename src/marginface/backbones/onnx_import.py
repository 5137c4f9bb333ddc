"""ONNX embedding models as trainable PyTorch backbones, for fine-tuning a model somebody else trained.

`import_onnx(path)` reads an image → embedding ONNX graph (one image input (B, 3, 112, 112), one (B, D)
output) and returns an `OnnxBackbone`: the graph's nodes run in their (topological) file order as PyTorch
operations, the weights of Conv, Gemm, MatMul, BatchNormalization and PRelu become `nn.Parameter`s (BN
running statistics buffers), every other tensor (Constant nodes, the operands of Add/Sub/Mul/Div, Clip
bounds) a fixed buffer. Supported ops: see `SUPPORTED_OPS`, the set face recognizers are exported with
(insightface's ResNets, MobileFaceNets) plus the Shape/Gather/Unsqueeze/Concat chain of a dynamic batch.
Each is tested against onnxruntime (tests/backbones/test_onnx_import.py).

Why not a converter package: onnx2torch and onnx2pytorch import torchvision at module level, which does not
install beside the CPU torch wheel (pip swaps in a CUDA build).

The batch dimension is always dynamic: a Reshape whose target's first entry is 0, -1, the batch or (for a
graph exported with a fixed batch of 1) 1 keeps the batch; any other Reshape of the batch is refused when
it runs. The backbone takes the library's input convention ((B, 3, 112, 112) RGB in [−1, 1], the Backbone
contract) and converts it to the model's own (`input`: channel order, mean, std of the 0–255 pixels) as
its first operation, so the exported model (`marginface export onnx`) and everything downstream use the
standard convention without extra flags. The graph description (`program`, JSON-able, no weights) is what
`backbones.save` writes into model.json, so `backbones.load` rebuilds the module without the source file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.errors import InputError

log = logging.getLogger(__name__)

INPUT_SIZE = 112
STANDARD_INPUT = {"channel_order": "RGB", "mean": 127.5, "std": 127.5}
# op -> input slots whose initializers are trainable (parameters) or statistics (buffers)
PARAM_SLOTS: dict[str, dict[int, str]] = {
    "Conv": {1: "weight", 2: "bias"},
    "Gemm": {1: "weight", 2: "bias"},
    "MatMul": {1: "weight"},
    "BatchNormalization": {1: "weight", 2: "bias"},
    "PRelu": {1: "slope"},
}
STAT_SLOTS: dict[str, dict[int, str]] = {"BatchNormalization": {3: "running_mean", 4: "running_var"}}


class OnnxImportError(InputError):
    """An ONNX file that cannot become a trainable image → embedding backbone; names the file and the op."""


def _attrs(node: Any) -> dict[str, Any]:
    """A node's attributes as plain JSON-able values (tensors as nested lists)."""
    import onnx
    from onnx import numpy_helper

    out: dict[str, Any] = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            array = numpy_helper.to_array(value)
            value = {"dtype": str(array.dtype), "shape": list(array.shape), "values": array.ravel().tolist()}
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list | tuple):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        elif not isinstance(value, int | float | str):
            raise OnnxImportError(f"attribute {attribute.name!r} of node {node.name!r} ({node.op_type}) "
                                  f"has an unsupported type {type(value).__name__}")
        out[attribute.name] = value
    return out


class NodeParams(nn.Module):
    """The trainable tensors (and BN statistics) of one graph node, by role: weight, bias, slope, ..."""

    def __init__(self, tensors: dict[str, tuple[Tensor, bool]]) -> None:
        super().__init__()
        for role, (tensor, trainable) in tensors.items():
            if trainable:
                self.register_parameter(role, nn.Parameter(tensor.clone().float()))
            else:
                self.register_buffer(role, tensor.clone().float())


# ---------------------------------------------------------------------------------------------- op kernels
Kernel = Callable[[list, dict, nn.Module, Tensor], Tensor]


def _conv(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    x, weight, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    if weight.dim() != 4:
        raise OnnxImportError(f"Conv with a {weight.dim() - 2}-d kernel: only 2-d convolutions are supported")
    pads = attrs.get("pads", [0, 0, 0, 0])
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        x = F.pad(x, (left, right, top, bottom))
        padding: tuple[int, int] = (0, 0)
    else:
        padding = (top, left)
    return F.conv2d(x, weight, bias, stride=tuple(attrs.get("strides", [1, 1])), padding=padding,
                    dilation=tuple(attrs.get("dilations", [1, 1])), groups=int(attrs.get("group", 1)))


def _batch_norm(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    x, weight, bias, mean, var = inputs[:5]
    momentum = 1.0 - float(attrs.get("momentum", 0.9))  # ONNX keeps `momentum` of the old value, torch of the new
    return F.batch_norm(x, mean, var, weight, bias, training=params.training, momentum=momentum,
                        eps=float(attrs.get("epsilon", 1e-5)))


def _prelu(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    x, slope = inputs
    return torch.where(x >= 0, x, x * slope)  # ONNX's unidirectional (numpy) broadcast of the slope


def _clip(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    low = float(low) if low is not None else None
    high = float(high) if high is not None else None
    return torch.clamp(inputs[0], min=low, max=high)


def _gemm(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    a, b = inputs[0], inputs[1]
    if attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if attrs.get("transB", 0):
        b = b.transpose(0, 1)
    out = float(attrs.get("alpha", 1.0)) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        out = out + float(attrs.get("beta", 1.0)) * inputs[2]
    return out


def _flatten(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    x = inputs[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    if axis == 1:
        return x.reshape(x.shape[0], -1)
    lead = math.prod(x.shape[:axis])
    return x.reshape(lead, -1)


def _reshape(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    x, shape = inputs
    dims = [int(v) for v in shape.tolist()]
    batch = x.shape[0]
    if not dims:
        raise OnnxImportError("Reshape to a scalar cannot keep the batch dimension")
    if dims[0] in (0, -1, batch) or dims[0] == 1:  # 1: a graph exported with a fixed batch of 1
        if dims[0] == 1 and batch != 1 and 0 not in dims[1:] and -1 not in dims[1:]:
            raise OnnxImportError(f"Reshape to {dims} would merge the batch of {batch} into other dimensions")
        rest = [x.shape[i] if d == 0 else d for i, d in enumerate(dims[1:], start=1)]
        return x.reshape(x.shape[0], *rest)
    raise OnnxImportError(f"Reshape to {dims} changes the batch dimension ({batch}); only batch-keeping "
                          f"reshapes can be trained through")


def _shape(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    shape = list(inputs[0].shape)
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    return torch.tensor(shape[start:None if end is None else int(end)], dtype=torch.int64)


def _gather(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    data, index = inputs
    axis = int(attrs.get("axis", 0))
    axis = axis + data.dim() if axis < 0 else axis
    index = index.long()
    index = torch.where(index < 0, index + data.shape[axis], index)
    picked = data.index_select(axis, index.reshape(-1))
    return picked.reshape((*data.shape[:axis], *index.shape, *data.shape[axis + 1:]))


def _unsqueeze(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    x = inputs[0]
    axes = [int(a) for a in (inputs[1].tolist() if len(inputs) > 1 and inputs[1] is not None else attrs["axes"])]
    rank = x.dim() + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        x = x.unsqueeze(axis)
    return x


def _concat(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    return torch.cat([t for t in inputs if t is not None], dim=int(attrs["axis"]))


def _pool(kind: str) -> Kernel:
    def kernel(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
        x = inputs[0]
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise OnnxImportError(f"{kind} with auto_pad={attrs['auto_pad']!r} is not supported")
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        if (top, left) != (bottom, right):
            raise OnnxImportError(f"{kind} with asymmetric pads {attrs['pads']} is not supported")
        kernel_size, stride = tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", [1, 1]))
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "MaxPool":
            return F.max_pool2d(x, kernel_size, stride, (top, left), tuple(attrs.get("dilations", [1, 1])),
                                ceil_mode=ceil)
        return F.avg_pool2d(x, kernel_size, stride, (top, left), ceil_mode=ceil,
                            count_include_pad=bool(attrs.get("count_include_pad", 0)))
    return kernel


def _dropout(inputs: list, attrs: dict, params: nn.Module, batch_ref: Tensor) -> Tensor:
    ratio = float(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else float(attrs.get("ratio", 0.5))
    return F.dropout(inputs[0], ratio, training=params.training)


ONNX_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16,
               11: torch.float64, 16: torch.bfloat16}
KERNELS: dict[str, Kernel] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": lambda i, a, p, b: F.relu(i[0]),
    "LeakyRelu": lambda i, a, p, b: F.leaky_relu(i[0], float(a.get("alpha", 0.01))),
    "Sigmoid": lambda i, a, p, b: torch.sigmoid(i[0]),
    "Clip": _clip,
    "Add": lambda i, a, p, b: i[0] + i[1],
    "Sub": lambda i, a, p, b: i[0] - i[1],
    "Mul": lambda i, a, p, b: i[0] * i[1],
    "Div": lambda i, a, p, b: i[0] / i[1],
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": lambda i, a, p, b: torch.matmul(i[0], i[1]),
    "GlobalAveragePool": lambda i, a, p, b: i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "AveragePool": _pool("AveragePool"),
    "MaxPool": _pool("MaxPool"),
    "Reshape": _reshape,
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Identity": lambda i, a, p, b: i[0],
    "Cast": lambda i, a, p, b: i[0].to(ONNX_DTYPES[int(a["to"])]),
    "Dropout": _dropout,
}
SUPPORTED_OPS = tuple(sorted([*KERNELS, "Constant"]))


def _module_name(index: int, node_name: str) -> str:
    return f"n{index}_" + re.sub(r"[^0-9A-Za-z_]", "_", node_name)[-40:].strip("_")


# ---------------------------------------------------------------------------------------------- the module
class OnnxBackbone(nn.Module):
    """An imported ONNX embedding graph as a trainable module satisfying the Backbone contract.

    Args:
        program: the graph description `program_from_onnx` returns (nodes, value names, fixed tensors, the
            model's input convention, its source file); JSON-able, stored in model.json by backbones.save.
        num_features: the embedding size the caller expects; must equal the graph's (checked).
        gradient_checkpointing: refused (a general graph has no layer sequence to checkpoint).
    """

    def __init__(self, program: dict, num_features: int | None = None, gradient_checkpointing: bool = False,
                 **unused: Any) -> None:
        super().__init__()
        self.program = program
        self.num_features = int(program["num_features"])
        if num_features is not None and int(num_features) != self.num_features:
            raise OnnxImportError(f"{program['source']['file']}: the model's embedding size is {self.num_features}, "
                                  f"model.num_features is {num_features}; set model.num_features: "
                                  f"{self.num_features}")
        if unused.get("dropout"):
            raise OnnxImportError("model.dropout cannot be added to an imported ONNX graph; leave it 0")
        self.set_grad_checkpointing(gradient_checkpointing)
        self.nodes_params = nn.ModuleDict()
        for index, node in enumerate(program["nodes"]):
            shapes = node.get("params", {})
            if shapes:
                tensors = {role: (torch.zeros(spec["shape"]), spec["trainable"]) for role, spec in shapes.items()}
                self.nodes_params[_module_name(index, node["name"])] = NodeParams(tensors)
        self.constants = nn.Module()  # fixed float tensors, in the state dict so they follow .to(device)
        self._int_constants: dict[str, Tensor] = {}
        for key, spec in program["constants"].items():
            tensor = torch.tensor(np.asarray(spec["values"], dtype=spec["dtype"]).reshape(spec["shape"]))
            if tensor.is_floating_point():
                self.constants.register_buffer(spec["buffer"], tensor.float())
            else:
                self._int_constants[key] = tensor
        source_input = program.get("input", STANDARD_INPUT)
        self.input_is_standard = (source_input["channel_order"] == "RGB" and float(source_input["mean"]) == 127.5
                                  and float(source_input["std"]) == 127.5)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Refuse checkpointing: an imported graph is not a sequence of layers to recompute one by one."""
        if enabled:
            raise OnnxImportError("model.gradient_checkpointing is not supported for imported ONNX graphs; "
                                  "set it to false (or lower data.batch_size)")

    def trainable_layers(self) -> list[nn.Module]:
        """The parameter-holding nodes in graph order (what `model.freeze_layers` counts)."""
        return [module for module in self.nodes_params.values() if any(True for _ in module.parameters())]

    def _model_input(self, x: Tensor) -> Tensor:
        """Contract input (RGB in [−1, 1]) → the source model's own convention."""
        if self.input_is_standard:
            return x
        spec = self.program["input"]
        pixels = x * 127.5 + 127.5
        if spec["channel_order"] == "BGR":
            pixels = pixels.flip(1)
        mean = torch.as_tensor(spec["mean"], dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        std = torch.as_tensor(spec["std"], dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        return (pixels - mean) / std

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, 112, 112) in [−1, 1] → (B, num_features): the graph's nodes in file order."""
        program = self.program
        values: dict[str, Tensor] = {program["input_name"]: self._model_input(x)}
        buffers = dict(self.constants.named_buffers())
        for index, node in enumerate(program["nodes"]):
            params = self.nodes_params[_module_name(index, node["name"])] if node.get("params") else self
            inputs: list = []
            for slot, name in enumerate(node["inputs"]):
                role = node.get("slots", {}).get(str(slot))
                if role is not None:
                    inputs.append(getattr(params, role))
                elif not name:
                    inputs.append(None)
                elif name in values:
                    inputs.append(values[name])
                elif name in self._int_constants:
                    inputs.append(self._int_constants[name])
                else:
                    inputs.append(buffers[program["constants"][name]["buffer"]])
            try:
                out = KERNELS[node["op"]](inputs, node["attrs"], params, x)
            except OnnxImportError as err:
                raise OnnxImportError(f"{program['source']['file']}: node {node['name']!r} ({node['op']}): "
                                      f"{err}") from None
            values[node["outputs"][0]] = out
        return values[program["output_name"]]


# ---------------------------------------------------------------------------------------------- import
def _load_proto(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise FileNotFoundError(f"pretrained ONNX model {path} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError / ValueError / others for a file that is not ONNX
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from None


def program_from_onnx(path: str | Path, input_spec: dict | None = None) -> tuple[dict, dict[str, Tensor]]:
    """Read an ONNX image → embedding model into (program, state_dict) for OnnxBackbone; every refusal
    (several inputs or outputs, a wrong input shape, an op without a kernel) names the file and the op."""
    from onnx import numpy_helper

    path = Path(path)
    model = _load_proto(path)
    graph = model.graph
    name = path.name
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxImportError(f"{name}: expected one image input and one embedding output, found "
                              f"{len(inputs)} input(s) {[v.name for v in inputs]} and {len(graph.output)} "
                              f"output(s) {[v.name for v in graph.output]}; is this an embedding model?")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] not in (None, INPUT_SIZE) or dims[3] not in (None, INPUT_SIZE):
        shown = ["?" if d is None else d for d in dims]
        raise OnnxImportError(f"{name}: input {inputs[0].name!r} has shape {shown}; an embedding model takes "
                              f"(batch, 3, {INPUT_SIZE}, {INPUT_SIZE})")
    unsupported = sorted({node.op_type for node in graph.node if node.op_type not in SUPPORTED_OPS})
    if unsupported:
        node = next(n for n in graph.node if n.op_type == unsupported[0])
        raise OnnxImportError(f"{name}: op {unsupported[0]!r} (node {node.name!r}) cannot be converted to a trainable "
                              f"module{' (also ' + ', '.join(unsupported[1:]) + ')' if unsupported[1:] else ''}; "
                              f"supported ops: {', '.join(SUPPORTED_OPS)}")
    constants: dict[str, dict] = {}

    def add_constant(key: str, array: np.ndarray) -> None:
        constants[key] = {"dtype": str(array.dtype), "shape": list(array.shape), "values": array.ravel().tolist(),
                          "buffer": f"c{len(constants)}"}

    # Constant nodes and Identity copies of tensors are folded into `initializers` first, so a weight that
    # reaches a Conv through either (torch's exporter dedups equal tensors behind Identity nodes) is trainable.
    folded: set[int] = set()
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            value = _attrs(node).get("value")
            if value is None:
                raise OnnxImportError(f"{name}: Constant node {node.name!r} without a tensor 'value' is not supported")
            initializers[node.output[0]] = np.asarray(value["values"], dtype=value["dtype"]).reshape(value["shape"])
            folded.add(index)
        elif node.op_type == "Identity" and node.input[0] in initializers:
            initializers[node.output[0]] = initializers[node.input[0]]
            folded.add(index)
    nodes, state, used_params = [], {}, set()
    for index, node in enumerate(graph.node):
        if index in folded:
            continue
        attrs = _attrs(node)
        entry: dict[str, Any] = {"op": node.op_type, "name": node.name or f"{node.op_type}_{index}",
                                 "inputs": list(node.input), "outputs": list(node.output[:1]), "attrs": attrs}
        roles = {**PARAM_SLOTS.get(node.op_type, {}), **STAT_SLOTS.get(node.op_type, {})}
        params: dict[str, dict] = {}
        slots: dict[str, str] = {}
        for slot, input_name in enumerate(node.input):
            if input_name in initializers and slot in roles:
                role = roles[slot]
                trainable = slot in PARAM_SLOTS.get(node.op_type, {})
                if input_name in used_params:
                    log.warning("%s: initializer %s is shared by several nodes; each gets its own copy", name,
                                input_name)
                used_params.add(input_name)
                array = initializers[input_name]
                params[role] = {"shape": list(array.shape), "trainable": trainable}
                slots[str(slot)] = role
                state[f"nodes_params.{_module_name(len(nodes), entry['name'])}.{role}"] = torch.from_numpy(
                    array.astype(np.float32).copy())
            elif input_name in initializers and input_name not in constants:
                add_constant(input_name, initializers[input_name])
        if params:
            entry["params"], entry["slots"] = params, slots
        nodes.append(entry)
    program = {"format": 1, "input_name": inputs[0].name, "output_name": graph.output[0].name, "nodes": nodes,
               "constants": constants, "input": dict(input_spec or STANDARD_INPUT), "num_features": 0,
               "source": {"file": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                          "opset": [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")][:1]}}
    for spec in constants.values():
        if np.dtype(spec["dtype"]).kind == "f":
            state[f"constants.{spec['buffer']}"] = torch.tensor(
                np.asarray(spec["values"], dtype=spec["dtype"]).reshape(spec["shape"]), dtype=torch.float32)
    return program, state


def import_onnx(path: str | Path, num_features: int | None = None, input_spec: dict | None = None,
                gradient_checkpointing: bool = False, dropout: float = 0.0) -> OnnxBackbone:
    """An ONNX image → embedding model as a trainable OnnxBackbone (weights loaded, training mode).

    `input_spec` is the source model's input convention ({"channel_order": "RGB"|"BGR", "mean", "std"} of
    0–255 pixels; default RGB, 127.5, 127.5); `num_features`, when given, must equal the model's output size.
    """
    path = Path(path)
    spec = _check_input_spec(input_spec, path.name)
    program, state = program_from_onnx(path, spec)
    probe = OnnxBackbone({**program, "num_features": 0}, None)
    probe.load_state_dict(state, strict=True)
    try:
        with torch.no_grad():
            out = probe.eval()(torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE))
    except OnnxImportError:
        raise  # already names the file and the node
    except (RuntimeError, KeyError, IndexError, ValueError) as err:
        raise OnnxImportError(f"{path.name}: the converted graph does not run on a (2, 3, {INPUT_SIZE}, "
                              f"{INPUT_SIZE}) batch: {type(err).__name__}: {err}") from None
    if out.dim() != 2 or out.shape[0] != 2:
        raise OnnxImportError(f"{path.name}: output {program['output_name']!r} has shape {list(out.shape)} for a "
                              f"batch of 2; an embedding model returns (batch, D)")
    program["num_features"] = int(out.shape[1])
    model = OnnxBackbone(program, num_features, gradient_checkpointing, dropout=dropout)
    model.load_state_dict(state, strict=True)
    log.info("imported %s: %d nodes, %d trainable tensors, %d-d embeddings", path, len(program["nodes"]),
             sum(1 for _ in model.parameters()), model.num_features)
    return model.train()


def _check_input_spec(spec: dict | None, where: str) -> dict:
    if spec is None:
        return dict(STANDARD_INPUT)
    unknown = sorted(set(spec) - set(STANDARD_INPUT))
    if unknown:
        raise OnnxImportError(f"{where}: unknown input convention key(s) {unknown}; valid: {sorted(STANDARD_INPUT)}")
    merged = {**STANDARD_INPUT, **spec}
    if merged["channel_order"] not in ("RGB", "BGR"):
        raise OnnxImportError(f"{where}: input channel_order {merged['channel_order']!r}; choose RGB or BGR")
    for key in ("mean", "std"):
        values = merged[key] if isinstance(merged[key], list) else [merged[key]]
        if len(values) not in (1, 3) or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise OnnxImportError(f"{where}: input {key} {merged[key]!r}; give a number or three (one per channel)")
        if key == "std" and any(v == 0 for v in values):
            raise OnnxImportError(f"{where}: input std must not be 0")
    return merged
