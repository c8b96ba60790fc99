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
    inits = [numpy_helper.from_array(np.float32(0.05), "s"),
             numpy_helper.from_array(np.int8(3), "z")]
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
    # per channel: the affine rule; a scalar: onnxruntime's two-tensor rule (qoperator.py)
    assert [n.op for n in g.nodes] == (["batchnorm"] if shape else
                                       ["constant", op[len("QLinear"):].lower()])
    x = np.random.default_rng(1).normal(0, 2, (2, 4, 3, 3)).astype(np.float32)
    ours = InferenceSession(g, device="cpu").run(None, {"x": x})[0]
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    assert np.rint(np.abs(ours - ref) / np.float32(0.07)).max() <= 1


def test_qlinear_constant_varying_along_space_is_a_constant_tensor():
    # not the affine rule: a `constant` node and the two-tensor add (qoperator.py; exactness
    # vs onnxruntime in tests/test_onnx_qlinear_const_tensor.py)
    g = import_onnx(_qlinear_const("QLinearAdd", (3, 3)))
    assert [n.op for n in g.nodes] == ["constant", "add"]


class G:
    """A small QDQ graph builder: per-tensor int8 Q/DQ, DQ'd per-channel conv weights."""

    def __init__(self, seed=0):
        self.nodes, self.inits, self.rng, self.n = [], [], np.random.default_rng(seed), 0

    def c(self, a):
        self.n += 1
        self.inits.append(numpy_helper.from_array(np.asarray(a), f"c{self.n}"))
        return f"c{self.n}"

    def op(self, op, ins, **attrs):
        self.n += 1
        out = f"{op.lower()}{self.n}"
        self.nodes.append(helper.make_node(op, ins, [out], name=f"{op}{self.n}", **attrs))
        return out

    def qdq(self, x, s, z=0):
        q = self.op("QuantizeLinear", [x, self.c(np.float32(s)), self.c(np.int8(z))])
        return self.op("DequantizeLinear", [q, self.c(np.float32(s)), self.c(np.int8(z))])

    def conv(self, x, cin, cout):
        w = self.rng.integers(-127, 128, (cout, cin, 3, 3)).astype(np.int8)
        s = self.rng.uniform(0.002, 0.01, cout).astype(np.float32)
        wd = self.op("DequantizeLinear", [self.c(w), self.c(s), self.c(np.zeros(cout, np.int8))],
                     axis=0)
        return self.op("Conv", [x, wd], pads=[1, 1, 1, 1])

    def model(self, x_shape, out):
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", 1, x_shape)],
                              [helper.make_tensor_value_info(out, 1, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m


def _compare(m, x, scale, max_steps):
    g = import_onnx(m)
    ours = InferenceSession(g, device="cpu").run(None, {"x": x})[0]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the float graph
    ref = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    steps = np.rint(np.abs(ours - ref) / np.float32(scale))
    assert steps.max() <= max_steps, steps.max()
    return g


def test_residual_sum_relu_left_float_and_carried_into_the_next_sum():
    # x -> conv -> Sum(., x) -> Relu -> r1; r1 -> Q -> conv -> Sum(., r1) -> Relu -> Q -> out:
    # the float r1 feeds the second Sum directly (light_resnet50's QOperator pattern)
    b = G(1)
    x = b.qdq("x", 0.05)
    c1 = b.qdq(b.conv(x, 4, 4), 0.06)
    r1 = b.op("Relu", [b.op("Sum", [c1, x])])
    c2 = b.qdq(b.conv(b.qdq(r1, 0.07, -128), 4, 4), 0.06)
    r2 = b.op("Relu", [b.op("Sum", [c2, r1])])
    out = b.op("DequantizeLinear", [b.op("QuantizeLinear", [r2, b.c(np.float32(0.1)),
                                                            b.c(np.int8(-128))]),
                                    b.c(np.float32(0.1)), b.c(np.int8(-128))])
    m = b.model(["N", 4, 6, 6], out)
    before = m.SerializeToString()
    x = np.random.default_rng(2).normal(0, 1, (2, 4, 6, 6)).astype(np.float32)
    g = _compare(m, x, 0.1, 2)
    assert m.SerializeToString() == before  # r1's inferred Q/DQ went into the importer's copy
    assert [n.op for n in g.nodes].count("add") == 2
    assert f"{r1}: scale 0.07" in g.metadata["inferred_quantization"]  # read by its Q


def test_concat_batchnorm_relu_global_pool_island():
    # Concat -> BatchNormalization -> Relu -> GlobalAveragePool -> Q: densenet's tail
    b = G(3)
    x = b.qdq("x", 0.05)
    a, c = b.qdq(b.conv(x, 3, 4), 0.04), b.qdq(b.conv(x, 3, 2), 0.03)
    cat = b.op("Concat", [a, c], axis=1)
    rng = np.random.default_rng(4)
    bn = b.op("BatchNormalization", [cat] + [b.c(v.astype(np.float32)) for v in (
        rng.uniform(0.5, 1, 6), rng.normal(0, 0.1, 6), rng.normal(0, 0.1, 6),
        rng.uniform(0.5, 2, 6))])
    gap = b.op("GlobalAveragePool", [b.op("Relu", [bn])])
    out = b.qdq(gap, 0.01, -128)
    m = b.model(["N", 3, 6, 6], out)
    x = np.random.default_rng(5).normal(0, 1, (2, 3, 6, 6)).astype(np.float32)
    g = _compare(m, x, 0.01, 3)
    assert [n.op for n in g.nodes] == ["conv2d", "conv2d", "concat", "batchnorm",
                                       "global_avg_pool"]
    inferred = g.metadata["inferred_quantization"]
    # not "through GlobalAveragePool": the average's narrower range would clip its input
    assert "(range Concat)" in inferred and "(range Relu)" in inferred


def test_reshape_transpose_between_float_input_and_its_quantize():
    b = G(6)
    r = b.op("Reshape", ["x", b.c(np.array([0, 4, 9], np.int64))])
    t = b.op("Transpose", [r], perm=[0, 2, 1])
    out = b.op("DequantizeLinear", [b.op("QuantizeLinear", [t, b.c(np.float32(0.02)),
                                                            b.c(np.int8(3))]),
                                    b.c(np.float32(0.02)), b.c(np.int8(3))])
    m = b.model(["N", 4, 3, 3], out)
    x = np.random.default_rng(7).normal(0, 1, (3, 4, 3, 3)).astype(np.float32)
    g = _compare(m, x, 0.02, 0)  # they commute with the quantize: exact
    assert [n.op for n in g.nodes] == ["reshape", "transpose"]
    assert (g.inputs[0].scale, g.inputs[0].zero_point) == (np.float32(0.02), 3)


def test_op_fused_by_onnxruntimes_optimizer_says_so():
    b = G(8)
    x = b.qdq("x", 0.05)
    w = b.rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8)
    wd = b.op("DequantizeLinear", [b.c(w), b.c(np.float32(0.01)), b.c(np.int8(0))])
    b.n += 1
    b.nodes.append(helper.make_node("FusedConv", [x, wd], ["fused"], name="FusedConv_0",
                                    domain="com.microsoft", activation="Relu"))
    out = b.qdq("fused", 0.1)
    m = b.model(["N", 4, 5, 5], out)
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match=r"'FusedConv_0' \(op FusedConv\).*"
                                                 r"quant_pre_process.*skip_optimization"):
        import_onnx(m)


def test_reshape_made_by_quant_pre_process_says_so():
    # quant_pre_process turns a MatMul over 3+ axes into Reshape -> Gemm -> Reshape with the
    # batch folded into rows (torchvision's convnext_tiny): the error says where it came from
    b = G(9)
    x = b.qdq("x", 0.05)
    b.nodes.append(helper.make_node("Reshape", [x, b.c(np.array([6, 4], np.int64))], ["r"],
                                    name="gemm_input_reshape"))
    m = b.model([1, 2, 3, 4], b.qdq("r", 0.05))
    with pytest.raises(UnsupportedOpError, match=r"'gemm_input_reshape' \(op Reshape\).*"
                                                 r"quant_pre_process.*skip_optimization"):
        import_onnx(m)
