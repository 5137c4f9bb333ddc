"""ONNX graphs as trainable backbones: every supported op against onnxruntime, the real MobileFaceNet's
parity on aligned LFW faces, save/load/export round trips, and the refusals that name the file and the op."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from marginface.backbones import load, save
from marginface.backbones.onnx_import import SUPPORTED_OPS, OnnxImportError, import_onnx
from marginface.infer.export import export_onnx_checked

RNG = np.random.default_rng(0)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes: list, initializers: list, out_dim: int | None = None, opset: int = 13,
           batch: str | int = "batch") -> onnx.ModelProto:
    """(batch, 3, 112, 112) 'x' → nodes → 'y'."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "features"])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _flatten_tail(source: str) -> list:
    return [helper.make_node("Flatten", [source], ["y"], axis=1)]


def _conv_weight(out: int, cin: int, k: int) -> np.ndarray:
    return RNG.normal(0, 0.2, (out, cin, k, k)).astype(np.float32)


def _cases() -> dict[str, tuple[list, list, int]]:
    """op name → (nodes, initializers, opset): each graph ends in a (B, D) output."""
    gap = [helper.make_node("GlobalAveragePool", ["h"], ["p"])] + _flatten_tail("p")
    bn = [_init("s", RNG.uniform(0.5, 1.5, 3).astype(np.float32)), _init("b", RNG.normal(0, 1, 3).astype(np.float32)),
          _init("m", RNG.normal(0, 1, 3).astype(np.float32)), _init("v", RNG.uniform(0.5, 2, 3).astype(np.float32))]
    return {
        "Conv": ([helper.make_node("Conv", ["x", "w", "b"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                   strides=[2, 2])] + gap,
                 [_init("w", _conv_weight(4, 3, 3)), _init("b", RNG.normal(0, 1, 4).astype(np.float32))], 13),
        "Conv asymmetric pads, dilation": (
            [helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[3, 3], pads=[0, 1, 2, 1],
                              dilations=[2, 2])] + gap, [_init("w", _conv_weight(4, 3, 3))], 13),
        "Conv depthwise": ([helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[7, 7], group=3,
                                             strides=[4, 4])] + _flatten_tail("h"),
                           [_init("w", _conv_weight(3, 1, 7))], 13),
        "BatchNormalization": ([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["h"],
                                                 epsilon=1e-3)] + gap, bn, 13),
        "PRelu": ([helper.make_node("PRelu", ["x", "slope"], ["h"])] + gap,
                  [_init("slope", RNG.uniform(0, 0.5, (3, 1, 1)).astype(np.float32))], 13),
        "Relu": ([helper.make_node("Relu", ["x"], ["h"])] + gap, [], 13),
        "LeakyRelu": ([helper.make_node("LeakyRelu", ["x"], ["h"], alpha=0.2)] + gap, [], 13),
        "Sigmoid": ([helper.make_node("Sigmoid", ["x"], ["h"])] + gap, [], 13),
        "Clip (inputs, opset 13)": ([helper.make_node("Clip", ["x", "lo", "hi"], ["h"])] + gap,
                                    [_init("lo", np.array(-0.2, np.float32)), _init("hi", np.array(0.5, np.float32))],
                                    13),
        "Clip (attributes, opset 6)": ([helper.make_node("Clip", ["x"], ["h"], min=0.0, max=0.3)] + gap, [], 6),
        "Add Sub Mul Div": ([helper.make_node("Add", ["x", "c1"], ["a"]), helper.make_node("Sub", ["a", "c2"], ["b"]),
                             helper.make_node("Mul", ["b", "c3"], ["c"]), helper.make_node("Div", ["c", "c4"], ["h"])]
                            + gap, [_init("c1", RNG.normal(0, 1, (3, 1, 1)).astype(np.float32)),
                                    _init("c2", np.float32(0.3)), _init("c3", RNG.normal(0, 1, (1, 3, 1, 1)).astype(
                                        np.float32)), _init("c4", np.float32(1.7))], 13),
        "Flatten + Gemm (transB)": (
            [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "W", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)],
            [_init("W", RNG.normal(0, 0.1, (10, 3 * 14 * 14)).astype(np.float32)),
             _init("c", RNG.normal(0, 1, 10).astype(np.float32))], 13),
        "Gemm (no transB) + MatMul": (
            [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[8, 8], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "W"], ["g"]), helper.make_node("MatMul", ["g", "M"], ["y"])],
            [_init("W", RNG.normal(0, 0.1, (3 * 14 * 14, 12)).astype(np.float32)),
             _init("M", RNG.normal(0, 0.1, (12, 5)).astype(np.float32))], 13),
        "Shape Gather Unsqueeze Concat Reshape (dynamic batch)": (
            [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Shape", ["p"], ["s"]),
             helper.make_node("Constant", [], ["zero"], value=_init("zero", np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["p", "shape"], ["y"])],
            [_init("axes", np.array([0], np.int64)), _init("minus1", np.array([-1], np.int64))], 13),
        "Cast": ([helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Cast", ["p"], ["h"], to=1)]
                 + _flatten_tail("h"), [], 13),
        "Conv weight behind Identity and Constant": (
            [helper.make_node("Identity", ["w"], ["w2"]),
             helper.make_node("Constant", [], ["b"], value=_init("b", RNG.normal(0, 1, 4).astype(np.float32))),
             helper.make_node("Conv", ["x", "w2", "b"], ["h"], kernel_shape=[3, 3], strides=[4, 4])] + gap,
            [_init("w", _conv_weight(4, 3, 3))], 13),
        "Unsqueeze (attribute, opset 11) + Identity + Dropout": (
            [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Identity", ["p"], ["i"]),
             helper.make_node("Dropout", ["i"], ["d"], ratio=0.3), helper.make_node("Shape", ["d"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["d", "shape"], ["y"])],
            [_init("zero", np.array(0, np.int64)), _init("minus1", np.array([-1], np.int64))], 11),
    }


CASES = _cases()


def _write(tmp_path: Path, model: onnx.ModelProto, name: str = "m.onnx") -> Path:
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_matches_onnxruntime_and_passes_gradients(tmp_path: Path, case: str) -> None:
    nodes, initializers, opset = CASES[case]
    path = _write(tmp_path, _model(nodes, initializers, opset=opset))
    model = import_onnx(path).eval()
    x = (RNG.random((3, 3, 112, 112), dtype=np.float32) * 2 - 1)
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    reference = _ort(path, x)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    model.train()
    inputs = torch.from_numpy(x).requires_grad_(True)
    model(inputs).square().sum().backward()
    assert inputs.grad is not None and torch.isfinite(inputs.grad).all()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_weights_reached_through_identity_or_constant_are_trainable(tmp_path: Path) -> None:
    nodes, initializers, _ = CASES["Conv weight behind Identity and Constant"]
    model = import_onnx(_write(tmp_path, _model(nodes, initializers)))
    assert sorted(name.rsplit(".", 1)[1] for name, _ in model.named_parameters()) == ["bias", "weight"]


def test_every_supported_op_is_tested() -> None:
    covered = {node.op_type for nodes, _, _ in CASES.values() for node in nodes}
    assert covered == set(SUPPORTED_OPS)


def test_batch_norm_trains_its_statistics_and_keeps_ort_parity_in_eval(tmp_path: Path) -> None:
    nodes, initializers, _ = CASES["BatchNormalization"]
    model = import_onnx(_write(tmp_path, _model(nodes, initializers)))
    (bn,) = [module for module in model.nodes_params.values() if hasattr(module, "running_mean")]
    before = bn.running_mean.clone()
    model.train()(torch.rand(4, 3, 112, 112))
    assert not torch.equal(before, bn.running_mean)  # training mode updates the running mean, as torch BN does
    assert {name.rsplit(".", 1)[1] for name, _ in model.named_parameters()} == {"weight", "bias"}


def test_input_convention_is_converted_inside_the_module(tmp_path: Path) -> None:
    """A BGR model on (x − 0) / 255 pixels gets the contract's RGB [−1, 1] input converted for it."""
    nodes, initializers, _ = CASES["Conv"]
    path = _write(tmp_path, _model(nodes, initializers))
    model = import_onnx(path, input_spec={"channel_order": "BGR", "mean": 0.0, "std": 255.0}).eval()
    x = RNG.random((2, 3, 112, 112), dtype=np.float32) * 2 - 1
    pixels_bgr = ((x * 127.5 + 127.5) / 255.0)[:, ::-1].copy()
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, _ort(path, pixels_bgr), rtol=1e-5, atol=1e-5)
    with pytest.raises(OnnxImportError, match="channel_order 'YUV'"):
        import_onnx(path, input_spec={"channel_order": "YUV"})


def test_fixed_batch_graph_becomes_dynamic(tmp_path: Path) -> None:
    """A model exported with batch 1 and Reshape to (1, -1) trains on batches of any size."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Reshape", ["p", "shape"], ["y"])]
    path = _write(tmp_path, _model(nodes, [_init("shape", np.array([1, -1], np.int64))], batch=1))
    model = import_onnx(path).eval()
    x = RNG.random((5, 3, 112, 112), dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    reference = np.concatenate([_ort(path, x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)


def test_save_load_and_export_round_trip(tmp_path: Path) -> None:
    nodes, initializers, _ = CASES["Flatten + Gemm (transB)"]
    model = import_onnx(_write(tmp_path, _model(nodes, initializers)))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01)  # "trained": the saved weights, not the source file's, must come back
    folder = save(model.eval(), "onnx", tmp_path / "saved", program=model.program)
    restored = load(folder)
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    _, difference = export_onnx_checked(restored, tmp_path / "exported.onnx")
    assert difference <= 1e-4


def test_refusals_name_the_file_and_the_op(tmp_path: Path, shared_data: Path) -> None:
    detector = shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx"
    with pytest.raises(OnnxImportError, match=r"face_detection_yunet_2023mar\.onnx: .*output"):
        import_onnx(detector)
    softmax = _write(tmp_path, _model([helper.make_node("Softmax", ["x"], ["s"])] + _flatten_tail("s"), []), "sm.onnx")
    with pytest.raises(OnnxImportError, match=r"sm\.onnx: op 'Softmax'"):
        import_onnx(softmax)
    not_onnx = tmp_path / "photo.onnx"
    not_onnx.write_bytes(b"\xff\xd8\xff\xe0 not a model")
    with pytest.raises(OnnxImportError, match=r"photo\.onnx: not a readable ONNX model"):
        import_onnx(not_onnx)
    nodes, initializers, _ = CASES["Conv"]
    conv = _write(tmp_path, _model(nodes, initializers), "conv.onnx")
    with pytest.raises(OnnxImportError, match=r"conv\.onnx: the model.s embedding size is 4, model.num_features is 5"):
        import_onnx(conv, num_features=512)
    with pytest.raises(OnnxImportError, match="gradient_checkpointing is not supported"):
        import_onnx(conv, gradient_checkpointing=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "features"])
    small = helper.make_model(helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(OnnxImportError, match=r"small\.onnx: input 'x' has shape \['\?', 3, 64, 64\]"):
        import_onnx(_write(tmp_path, small, "small.onnx"))
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        import_onnx(tmp_path / "missing.onnx")


def test_shared_mobilefacenet_equals_onnxruntime_on_aligned_lfw_faces(shared_data: Path) -> None:
    """The issue's parity bar: 64 aligned LFW faces, max |Δ| ≤ 1e-4 and cosine ≥ 0.99999, before training."""
    from marginface.data.image import decode_image
    from marginface.infer.detect import YuNetDetector
    from marginface.infer.prepare import FacePreprocessor

    path = shared_data / "face_recognition_mobilefacenet" / "mobilefacenet_dynamic_batch.onnx"
    detector = YuNetDetector(shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx")
    prepare = FacePreprocessor(detector, 112)
    photos = sorted((shared_data / "lfw" / "lfw-deepfunneled").glob("A*/*.jpg"))[:64]
    faces = np.stack([prepare(decode_image(p.read_bytes(), str(p))) for p in photos])
    assert prepare.aligned == 64
    x = (faces.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5
    model = import_onnx(path, num_features=128).eval()
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    reference = _ort(path, x)
    assert np.abs(ours - reference).max() <= 1e-4
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.99999
