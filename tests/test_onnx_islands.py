"""Float islands (synapse_gpu/onnx/islands.py) in models quantize_static really writes:
an MLP whose Flatten sits between the float input and its QuantizeLinear, a Softmax after
the last DequantizeLinear, QLinearAdd/QLinearMul with a constant operand."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from synapse_gpu import InferenceSession
from synapse_gpu.errors import UnsupportedOpError
from synapse_gpu.examples import __path__ as examples_path
from synapse_gpu.onnx.importer import import_onnx

DIGITS = examples_path[0]


def _digits():
    calib = np.load(f"{DIGITS}/digits_calib.npz")["images"]
    test = np.load(f"{DIGITS}/digits_test.npz")
    return calib, test["images"], test["labels"]


def _float_mlp(softmax):
    """Flatten -> Gemm(64, 128) -> Relu -> Gemm(128, 10) [-> Softmax]: random features
    and a ridge-regression readout fitted on the first half of the digits test split."""
    _, x, y = _digits()
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((128, 64)) * np.sqrt(2 / 64)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 128).astype(np.float32)
    h = np.maximum(x[:180].reshape(180, 64) @ w1.T + b1, 0)
    w2 = np.linalg.solve(h.T @ h + np.eye(128), h.T @ np.eye(10)[y[:180]]).T.astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1)]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], axis=-1))
        out = "prob"
    inits = [numpy_helper.from_array(a, n) for n, a in
             (("w1", w1), ("b1", b1), ("w2", w2), ("b2", np.zeros(10, np.float32)))]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _quantize(model, tmp_path, fmt, per_channel, tag=""):
    calib, _, _ = _digits()
    src, dst = tmp_path / f"f32{tag}.onnx", tmp_path / f"{fmt}{per_channel}{tag}.onnx"
    onnx.save(model, src)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 32]} for i in range(0, 128, 32)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return str(dst)


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_mlp_with_flatten_before_quantize_matches_onnxruntime_accuracy(tmp_path, fmt, per_channel):
    path = _quantize(_float_mlp(softmax=False), tmp_path, fmt, per_channel)
    g = import_onnx(path)
    # the Flatten moved behind the boundary quantize, the input keeps the model's scale
    assert "x: scale" in g.metadata["inferred_quantization"]
    assert [n.op for n in g.nodes][:2] == ["flatten", "dense"]
    _, x, y = _digits()
    x, y = x[180:], y[180:]
    ours = InferenceSession(g, device="cpu").run(None, {"x": x})[0]
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    acc_ours, acc_ref = (ours.argmax(1) == y).mean(), (ref.argmax(1) == y).mean()
    print(f"digits MLP {fmt} per_channel={per_channel}: Synapse {acc_ours:.4f}, "
          f"onnxruntime {acc_ref:.4f}, identical logits "
          f"{(np.abs(ours - ref) < 1e-6).mean():.4f}")
    assert acc_ours == acc_ref > 0.85


def _softmax_island_model():
    """DQ -> Softmax -> graph output: the Softmax has no QuantizeLinear after it."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Flatten", ["d"], ["f"]),
             helper.make_node("Softmax", ["f"], ["p"], axis=-1)]
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(3), "z")]
    g = helper.make_graph(nodes, "sm", [helper.make_tensor_value_info("x", 1, ["N", 2, 5])],
                          [helper.make_tensor_value_info("p", 1, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_float_softmax_at_the_output_is_lowered_with_onnxruntimes_int8_scale():
    m = _softmax_island_model()
    g = import_onnx(m)
    assert [n.op for n in g.nodes] == ["flatten", "softmax"]
    assert (g.outputs[0].scale, g.outputs[0].zero_point) == (np.float32(1 / 256), -128)
    assert "stated Softmax" in g.metadata["inferred_quantization"]
    x = np.random.default_rng(0).normal(0, 2, (3, 2, 5)).astype(np.float32)
    ours = InferenceSession(g, device="cpu").run(None, {"x": x})[0]
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    assert np.abs(ours - ref).max() <= 1 / 256  # ORT's float softmax, one step of 1/256


def _qlinear_const(op, shape):
    rng = np.random.default_rng(5)
    c = rng.integers(-100, 100, shape).astype(np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["q"]),
             helper.make_node(op, ["q", "sx", "zx", "c", "sc", "zc", "sy", "zy"], ["y"],
                              domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["y", "sy", "zy"], ["out"])]
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("sx", np.float32(0.04)), ("zx", np.int8(-3)), ("c", c), ("sc", np.float32(0.02)),
        ("zc", np.int8(1)), ("sy", np.float32(0.07)), ("zy", np.int8(5)))]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", 1, ["N", 4, 3, 3])],
                          [helper.make_tensor_value_info("out", 1, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("shape", [(), (4, 1, 1)])
def test_qlinear_binary_with_a_constant_operand(op, shape):
    m = _qlinear_const(op, shape)
    g = import_onnx(m)
    assert [n.op for n in g.nodes] == ["batchnorm"]
    x = np.random.default_rng(1).normal(0, 2, (2, 4, 3, 3)).astype(np.float32)
    ours = InferenceSession(g, device="cpu").run(None, {"x": x})[0]
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    assert np.rint(np.abs(ours - ref) / np.float32(0.07)).max() <= 1


def test_qlinear_constant_varying_along_space_is_one_error():
    with pytest.raises(UnsupportedOpError, match=r"\(op QLinearAdd\): a constant operand of shape "
                                                 r"\[3, 3\].*hint: fold"):
        import_onnx(_qlinear_const("QLinearAdd", (3, 3)))
