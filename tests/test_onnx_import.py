"""The importer's rules on small models: QDQ groups, float islands, the boundary,
uint8, shapes and batch, constant folding, opsets, and the errors for what has no
integer form. Agreement figures against onnxruntime are in test_onnx_ort.py."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ort_helpers import ort_u8s8_exact
from synapse_gpu import InferenceSession
from synapse_gpu.errors import OnnxImportError, SynapseError, UnsupportedOpError
from synapse_gpu.onnx.importer import OPSET_MAX, import_onnx

F32, I8, U8 = TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8


class M:
    """A small ONNX model under construction (QDQ helpers included)."""

    def __init__(self, seed=0):
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def const(self, arr, base="c"):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op, ins, n_out=1, domain="", **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, ins, outs, name=self.name(op), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def input(self, name, shape, elem=F32):
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, name, elem=F32):
        self.outputs.append(helper.make_tensor_value_info(name, elem, None))
        return name

    def q(self, x, s, z, dtype=np.int8):
        return self.node("QuantizeLinear", [x, self.const(np.float32(s)), self.const(dtype(z))])

    def dq(self, x, s, z, dtype=np.int8):
        return self.node("DequantizeLinear", [x, self.const(np.float32(s)), self.const(dtype(z))])

    def qdq(self, x, s, z, dtype=np.int8):
        return self.dq(self.q(x, s, z, dtype), s, z, dtype)

    def weight(self, shape, axis=0, per_channel=True):
        """DequantizeLinear of a random int8 initializer, per channel along `axis`."""
        w = self.rng.integers(-127, 128, shape).astype(np.int8)
        n = shape[axis] if per_channel else None
        s = self.rng.uniform(0.002, 0.02, n).astype(np.float32) if n else np.float32(0.01)
        z = np.zeros(n, np.int8) if n else np.int8(0)
        self.w_scale = s
        return self.node("DequantizeLinear", [self.const(w, "w"), self.const(s), self.const(z)],
                         axis=axis)

    def model(self, opset=13):
        graph = helper.make_graph(self.nodes, "m", self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        return model


def ours(model, feeds, output_type="float32"):
    return InferenceSession(import_onnx(model), device="cpu").run(None, feeds,
                                                                  output_type=output_type)


def onnxruntime(model, feeds):
    """onnxruntime as users run it; where its fused u8s8 integer kernels saturate (x86
    without VNNI, tests/ort_helpers.py), its unfused float path: the QDQ graph as written."""
    so = ort.SessionOptions()
    if not ort_u8s8_exact():
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def steps(a, b, s):
    """|a - b| in quantization steps of scale s (float outputs of the same grid)."""
    return np.rint(np.abs(a.astype(np.float64) - b) / s)


def qdq_conv(relu, y_zp=-20, seed=0):
    m = M(seed)
    x = m.qdq(m.input("x", ["N", 3, 9, 9]), 0.03, 5)
    w = m.weight((4, 3, 3, 3))
    b = m.node("DequantizeLinear", [m.const(m.rng.integers(-300, 300, 4).astype(np.int32)),
                                    m.const(np.float32(0.03) * m.w_scale), m.const(np.zeros(4, np.int32))],
               axis=0)  # the accumulator's unit, as quantize_static writes it
    y = m.node("Conv", [x, w, b], pads=[1, 1, 1, 1], strides=[2, 1])
    if relu:
        y = m.node("Relu", [y])
    m.output(m.dq(m.q(y, 0.05, y_zp), 0.05, y_zp))
    return m.model(), {"x": m.rng.normal(0, 1, (2, 3, 9, 9)).astype(np.float32)}


def test_qdq_conv_relu_becomes_one_clamped_conv():
    model, feeds = qdq_conv(relu=True)
    g = import_onnx(model)
    (conv,) = g.nodes
    assert conv.op == "conv2d" and conv.attrs["qmin"] == -20 and conv.attrs["qmax"] == 127
    assert g.inputs[0].shape == (-1, 3, 9, 9)
    assert (g.inputs[0].scale, g.inputs[0].zero_point) == (np.float32(0.03), 5)
    assert (g.outputs[0].scale, g.outputs[0].zero_point) == (np.float32(0.05), -20)
    assert g.outputs[0].name == model.graph.output[0].name
    y = ours(model, feeds)[0]
    assert y.min() == 0.0 and np.abs(steps(y, onnxruntime(model, feeds)[0], 0.05)).max() <= 1


def same_graph(g1, g2):
    assert [(n.op, n.attrs) for n in g1.nodes] == [(n.op, n.attrs) for n in g2.nodes]
    for n1, n2 in zip(g1.nodes, g2.nodes):
        for role in n1.params:
            np.testing.assert_array_equal(g1.param(n1, role), g2.param(n2, role))
    assert [(t.shape, t.scale, t.zero_point) for t in g1.inputs + g1.outputs] == \
        [(t.shape, t.scale, t.zero_point) for t in g2.inputs + g2.outputs]


def test_qdq_and_qoperator_conv_import_to_the_same_graph():
    qdq, _ = qdq_conv(relu=False)
    init = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    conv = next(n for n in qdq.graph.node if n.op_type == "Conv")
    dq_of = {n.output[0]: n.input for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    xq, wq, bq = (dq_of[i] for i in conv.input)
    yq = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == conv.output[0])
    m = M()
    x = m.q(m.input("x", ["N", 3, 9, 9]), init[xq[1]], init[xq[2]])
    y = m.node("QLinearConv", [x, m.const(init[xq[1]]), m.const(init[xq[2]]), m.const(init[wq[0]]),
                               m.const(init[wq[1]]), m.const(init[wq[2]]), m.const(init[yq.input[1]]),
                               m.const(init[yq.input[2]]), m.const(init[bq[0]])],
               domain="", pads=[1, 1, 1, 1], strides=[2, 1])
    m.output(m.dq(y, init[yq.input[1]], init[yq.input[2]]))
    same_graph(import_onnx(qdq), import_onnx(m.model()))


def test_uint8_model_gives_the_int8_graph_of_the_same_real_values():
    graphs = []
    for dtype, shift in ((np.int8, 0), (np.uint8, 128)):
        m = M(3)
        x = m.qdq(m.input("x", ["N", 3, 9, 9]), 0.03, 5 + shift, dtype)
        y = m.node("Conv", [x, m.weight((4, 3, 3, 3))], pads=[1, 1, 1, 1])
        m.output(m.dq(m.q(y, 0.05, -20 + shift, dtype), 0.05, -20 + shift, dtype))
        graphs.append(import_onnx(m.model()))
    same_graph(*graphs)


def _unary_qdq(op, seed=0, shape=(2, 4, 7, 6), opset=13, **attrs):
    m = M(seed)
    x = m.qdq(m.input("x", ["N", *shape[1:]]), 0.04, -7)
    extra = []
    if op == "PRelu":
        extra = [m.const(m.rng.uniform(-0.5, 0.5, (shape[1], 1, 1)).astype(np.float32))]
    elif op == "BatchNormalization":
        c = shape[1]
        extra = [m.const(m.rng.uniform(0.5, 2, c).astype(np.float32)),
                 m.const(m.rng.normal(0, 0.2, c).astype(np.float32)),
                 m.const(m.rng.normal(0, 0.3, c).astype(np.float32)),
                 m.const(m.rng.uniform(0.5, 2, c).astype(np.float32))]
    elif op == "Clip":
        extra = [m.const(np.float32(-0.5)), m.const(np.float32(1.5))]
    y = m.node(op, [x, *extra], **attrs)
    s, z = (1 / 256, -128) if op == "Softmax" else (0.05, 3)
    m.output(m.dq(m.q(y, s, z), s, z))
    return m.model(opset), {"x": m.rng.normal(0, 1.5, shape).astype(np.float32)}, s


# op, attrs, Synapse ops, floor on the fraction identical to onnxruntime (which runs the
# float op between DequantizeLinear and QuantizeLinear, or its fused kernel); every
# difference is one step. BatchNormalization stores its per-channel gain as int8
# (docs/SPEC.md), so it rounds the gain: measured 93.8% here.
UNARY = [
    ("Relu", {}, ["relu", "requantize"], 0.98),
    ("Clip", {}, ["clip", "requantize"], 0.98),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
     ["max_pool", "requantize"], 0.98),
    ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], count_include_pad=1, pads=[1, 0, 1, 1]),
     ["avg_pool"], 0.98),
    ("GlobalAveragePool", {}, ["global_avg_pool"], 0.98),
    ("LeakyRelu", dict(alpha=0.2), ["lut"], 0.98),
    ("Sigmoid", {}, ["lut"], 0.98),
    ("Tanh", {}, ["lut"], 0.98),
    ("Softmax", dict(axis=-1), ["softmax"], 0.98),
    ("PRelu", {}, ["prelu"], 0.98),
    ("BatchNormalization", dict(epsilon=1e-3), ["batchnorm"], 0.9),
    ("Flatten", {}, ["flatten", "requantize"], 0.98),
    ("Transpose", dict(perm=[0, 2, 3, 1]), ["transpose", "requantize"], 0.98),
]


@pytest.mark.parametrize("op,attrs,ops,floor", UNARY, ids=[u[0] for u in UNARY])
def test_qdq_single_op_groups(op, attrs, ops, floor):
    model, feeds, s = _unary_qdq(op, **attrs)
    assert [n.op for n in import_onnx(model).nodes] == ops
    d = steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], s)
    assert d.max() <= 1 and (d == 0).mean() >= floor, (d.max(), (d == 0).mean())


def test_softmax_before_opset_13_flattens_from_the_axis():
    model, feeds, s = _unary_qdq("Softmax", opset=12, axis=1)
    assert [n.op for n in import_onnx(model).nodes] == ["reshape", "softmax", "reshape"]
    assert steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], s).max() <= 1


def _binary_qdq(op, n_in=2, b_shape=(2, 4, 5, 5)):
    m = M(1)
    xs = [m.qdq(m.input("a", ["N", 4, 5, 5]), 0.03, 4)]
    xs += [m.qdq(m.input(f"b{i}", ["N", *b_shape[1:]]), 0.02 * (i + 2), -9) for i in range(n_in - 1)]
    y = m.node(op, xs, **({"axis": 1} if op == "Concat" else {}))
    m.output(m.dq(m.q(y, 0.06, 2), 0.06, 2))
    feeds = {"a": m.rng.normal(0, 1, (2, 4, 5, 5)).astype(np.float32)}
    feeds.update({f"b{i}": m.rng.normal(0, 1, (2, *b_shape[1:])).astype(np.float32)
                  for i in range(n_in - 1)})
    return m.model(), feeds


@pytest.mark.parametrize("op,ops", [("Add", ["add"]), ("Sum", ["add"]), ("Mul", ["mul"]),
                                    ("Concat", ["concat"])])
def test_qdq_binary_op_groups(op, ops):
    model, feeds = _binary_qdq(op)
    assert [n.op for n in import_onnx(model).nodes] == ops
    assert steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], 0.06).max() <= 1


def test_sum_of_three_is_two_adds():
    # the partial sum is quantized over its inputs' ranges: two roundings, within 1 step
    model, feeds = _binary_qdq("Sum", n_in=3)
    g = import_onnx(model)
    assert [n.op for n in g.nodes] == ["add", "add"]
    assert steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], 0.06).max() <= 1


def _const_operand_qdq(op, c, const_first=False, quantized_const=False):
    m = M(3)
    x = m.qdq(m.input("x", ["N", 4, 5, 5]), 0.03, 4)
    k = m.qdq(m.const(c), 0.01, 0) if quantized_const else m.const(c)
    y = m.node(op, [k, x] if const_first else [x, k])
    m.output(m.dq(m.q(y, 0.05, -3), 0.05, -3))
    return m.model(), {"x": m.rng.normal(0, 1, (2, 4, 5, 5)).astype(np.float32)}


@pytest.mark.parametrize("op,const_first,quantized_const,shape", [
    ("Add", False, False, (4, 1, 1)), ("Add", True, True, (1, 4, 1, 1)), ("Mul", False, False, ()),
    ("Mul", True, True, (4, 1, 1)), ("Sub", False, False, (4, 1, 1)), ("Sub", True, False, ()),
    ("Div", False, False, (4, 1, 1))])
def test_qdq_constant_operand_is_a_per_channel_affine(op, const_first, quantized_const, shape):
    c = np.random.default_rng(4).uniform(0.5, 1.5, shape).astype(np.float32)
    model, feeds = _const_operand_qdq(op, c, const_first, quantized_const)
    assert [n.op for n in import_onnx(model).nodes] == ["batchnorm"]
    # the float op rounds once in onnxruntime; here the gain and offset are rounded too
    assert steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], 0.05).max() <= 1


@pytest.mark.parametrize("const_first", [False, True])
def test_constant_operand_varying_along_space_is_one_error(const_first):
    c = np.random.default_rng(4).uniform(0.5, 1.5, (1, 5, 5)).astype(np.float32)
    with pytest.raises(UnsupportedOpError, match=r"\(op Add\): a constant operand of shape "
                                                 r"\[1, 5, 5\].*per channel.*hint: fold"):
        import_onnx(_const_operand_qdq("Add", c, const_first)[0])


@pytest.mark.parametrize("alpha,beta,float_bias", [(1.0, 1.0, False), (0.5, 2.0, False),
                                                   (1.0, 1.0, True)])
def test_qdq_gemm_and_matmul(alpha, beta, float_bias):
    m = M(2)
    x = m.qdq(m.input("x", ["N", 12]), 0.05, 0)
    if float_bias:
        b = m.const(m.rng.normal(0, 0.5, 5).astype(np.float32))
    else:
        b = m.node("DequantizeLinear", [m.const(m.rng.integers(-900, 900, 5).astype(np.int32)),
                                        m.const(np.float32(0.05 * 0.01)), m.const(np.int32(0))])
    y = m.node("Gemm", [x, m.weight((5, 12), axis=0, per_channel=False), b], transB=1,
               alpha=alpha, beta=beta)
    z = m.node("MatMul", [m.qdq(y, 0.04, 1), m.weight((5, 3), axis=1)])
    m.output(m.dq(m.q(z, 0.03, -4), 0.03, -4))
    model, feeds = m.model(), {"x": m.rng.normal(0, 1, (6, 12)).astype(np.float32)}
    assert [n.op for n in import_onnx(model).nodes] == ["dense", "dense"]
    assert steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], 0.03).max() <= 1


def test_qdq_matmul_of_two_activations():
    m = M(4)
    a = m.qdq(m.input("a", ["N", 3, 4, 6]), 0.05, 2)
    b = m.qdq(m.input("b", ["N", 3, 6, 5]), 0.04, -1)
    m.output(m.dq(m.q(m.node("MatMul", [a, b]), 0.2, 0), 0.2, 0))
    model = m.model()
    feeds = {"a": m.rng.normal(0, 1, (2, 3, 4, 6)).astype(np.float32),
             "b": m.rng.normal(0, 1, (2, 3, 6, 5)).astype(np.float32)}
    assert [n.op for n in import_onnx(model).nodes] == ["matmul"]
    assert steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], 0.2).max() <= 1


def test_float_island_chain_after_qlinearconv():
    """QLinearConv -> DQ -> BatchNormalization -> Relu -> MaxPool -> Q (what quantize_static
    leaves for an unfolded BN in QOperator format) becomes batchnorm (ReLU fused) + max_pool:
    Q is monotone, so a max pool commutes with it."""
    m = M(5)
    x = m.q(m.input("x", ["N", 2, 8, 8]), 0.05, 0)
    w, ws = m.rng.integers(-100, 100, (3, 2, 3, 3)).astype(np.int8), np.float32(0.01)
    c = m.node("QLinearConv", [x, m.const(np.float32(0.05)), m.const(np.int8(0)), m.const(w),
                               m.const(ws), m.const(np.int8(0)), m.const(np.float32(0.1)),
                               m.const(np.int8(-3))], pads=[1, 1, 1, 1])
    bn = m.node("BatchNormalization", [m.dq(c, 0.1, -3)] + [m.const(v.astype(np.float32)) for v in (
        m.rng.uniform(0.5, 2, 3), m.rng.normal(0, 0.3, 3), m.rng.normal(0, 0.3, 3),
        m.rng.uniform(0.5, 2, 3))])
    p = m.node("MaxPool", [m.node("Relu", [bn])], kernel_shape=[2, 2], strides=[2, 2])
    m.output(m.dq(m.q(p, 0.08, -128), 0.08, -128))
    model, feeds = m.model(), {"x": m.rng.normal(0, 2, (2, 2, 8, 8)).astype(np.float32)}
    g = import_onnx(model)
    assert [n.op for n in g.nodes] == ["conv2d", "batchnorm", "max_pool"]
    assert g.nodes[1].attrs["qmin"] == -128  # relu fused: Q(0) = -128 here
    assert steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], 0.08).max() <= 1


def test_float_chain_without_quantize_is_rejected_with_a_hint():
    m = M()
    x = m.qdq(m.input("x", ["N", 3, 9, 9]), 0.03, 5)
    y = m.node("Sigmoid", [m.node("Conv", [x, m.weight((4, 3, 3, 3))])])
    m.output(m.dq(m.q(y, 0.01, 0), 0.01, 0))
    # the first node that cannot be lowered is named: the Conv, whose output nothing quantizes
    with pytest.raises(OnnxImportError, match=r"'Conv\d+' \(op Conv\): its float output .* has no "
                                              r"quantization.*hint"):
        import_onnx(m.model())


def test_float_weight_is_rejected_with_a_hint():
    m = M()
    x = m.qdq(m.input("x", ["N", 3, 9, 9]), 0.03, 5)
    y = m.node("Conv", [x, m.const(np.ones((4, 3, 3, 3), np.float32))])
    m.output(m.dq(m.q(y, 0.01, 0), 0.01, 0))
    with pytest.raises(SynapseError, match="weight is a float constant.*hint: quantize"):
        import_onnx(m.model())


def test_float_input_must_feed_quantizelinear():
    m = M()
    x = m.input("x", ["N", 4])
    m.output(m.dq(m.q(m.node("Relu", [x]), 0.1, 0), 0.1, 0))
    with pytest.raises(OnnxImportError, match="float graph input 'x' is read by node.*Relu"):
        import_onnx(m.model())


@pytest.mark.parametrize("op,attrs,match", [
    ("Transpose", dict(perm=[1, 0, 2, 3]), "moves the batch axis"),
    ("Flatten", dict(axis=0), "axis 0"),
    ("Flatten", dict(axis=2), "axis 2 .* into the batch"),
    ("MaxPool", dict(kernel_shape=[2, 2], storage_order=1), "storage_order"),
    ("Softmax", dict(axis=0), "mixes samples"),
    ("Squeeze", {}, "without axes"),
])
def test_unsupported_attributes_name_node_and_op(op, attrs, match):
    m = M()
    y = m.node(op, [m.qdq(m.input("x", ["N", 2, 4, 4]), 0.1, 0)], **attrs)
    m.output(m.dq(m.q(y, 0.1, 0), 0.1, 0))
    with pytest.raises(UnsupportedOpError, match=rf"'{op}\d+' \(op {op}\).*{match}"):
        import_onnx(m.model())


def _reshape_model(target_nodes, declared_batch="N"):
    m = M()
    x = m.dq(m.input("x", [declared_batch, 2, 3, 4], I8), 0.1, 0)
    shape = target_nodes(m, x)
    y = m.node("Reshape", [x, shape])
    m.output(m.dq(m.q(y, 0.1, 0), 0.1, 0))
    return m.model()


def test_shape_subgraph_feeding_reshape_is_folded():
    def exported(m, x):  # the torch.onnx pattern: [Shape(x)[0], -1]
        batch = m.node("Unsqueeze", [m.node("Gather", [m.node("Shape", [x]), m.const(np.int64(0))]),
                                     m.const(np.array([0], np.int64))])
        return m.node("Concat", [batch, m.const(np.array([-1], np.int64))], axis=0)
    g = import_onnx(_reshape_model(exported))
    assert [(n.op, n.attrs.get("shape")) for n in g.nodes] == [("reshape", [-1, 24])]
    x = np.arange(3 * 24).reshape(3, 2, 3, 4).astype(np.int8)
    y = InferenceSession(g, device="cpu").run(None, {"x": x}, output_type="int8")[0]
    np.testing.assert_array_equal(y, x.reshape(3, 24))


def test_batch_dependent_shape_arithmetic_is_rejected():
    def doubled(m, x):
        batch = m.node("Gather", [m.node("Shape", [x]), m.const(np.array([0], np.int64))])
        twice = m.node("Mul", [batch, m.const(np.array([2], np.int64))])
        return m.node("Concat", [twice, m.const(np.array([-1], np.int64))], axis=0)
    with pytest.raises(UnsupportedOpError, match="batch size"):
        import_onnx(_reshape_model(doubled))


def test_declared_batch_one_becomes_dynamic():
    g = import_onnx(_reshape_model(lambda m, x: m.const(np.array([1, 6, 4], np.int64)), 1))
    assert g.inputs[0].shape == (-1, 2, 3, 4) and g.nodes[0].attrs["shape"] == [-1, 6, 4]
    with pytest.raises(UnsupportedOpError, match="does not keep axis 0"):
        import_onnx(_reshape_model(lambda m, x: m.const(np.array([2, 12, 4], np.int64)), 1))


def qop_conv(opset):
    m = M(7)
    x = m.q(m.input("x", ["N", 2, 6, 6]), 0.05, 0)
    y = m.node("QLinearConv", [x, m.const(np.float32(0.05)), m.const(np.int8(0)),
                               m.const(np.ones((2, 2, 3, 3), np.int8)), m.const(np.float32(0.01)),
                               m.const(np.int8(0)), m.const(np.float32(0.1)), m.const(np.int8(0))])
    m.output(m.dq(y, 0.1, 0))
    return m.model(opset)


@pytest.mark.parametrize("opset", [10, 13, 19, 21, OPSET_MAX])
def test_supported_opsets(opset):
    assert [n.op for n in import_onnx(qop_conv(opset)).nodes] == ["conv2d"]


@pytest.mark.parametrize("opset", [8, OPSET_MAX + 5])
def test_opsets_outside_the_range_are_converted_or_rejected(opset):
    with pytest.raises(OnnxImportError, match=f"opset {opset} is outside the supported range"):
        import_onnx(qop_conv(opset))


def test_convinteger_chain_becomes_one_conv():
    """ConvInteger -> Cast -> Mul(scale) -> Add(bias) -> Relu -> QuantizeLinear: the
    int32 accumulator, its real scale and bias, folded into one requantizing conv."""
    m = M(8)
    x = m.q(m.input("x", ["N", 2, 6, 6]), 0.05, 7, np.uint8)
    w = m.rng.integers(0, 256, (3, 2, 3, 3)).astype(np.uint8)
    acc = m.node("ConvInteger", [x, m.const(w), m.const(np.uint8(7)), m.const(np.uint8(128))],
                 pads=[1, 1, 1, 1])
    f = m.node("Cast", [acc], to=F32)
    f = m.node("Mul", [f, m.const(np.full((1, 3, 1, 1), 0.05 * 0.002, np.float32))])
    f = m.node("Add", [f, m.const(np.array([[[[0.3]], [[-0.2]], [[0.1]]]], np.float32))])
    f = m.node("Relu", [f])
    m.output(m.dq(m.q(f, 0.02, -100), 0.02, -100))
    model, feeds = m.model(), {"x": m.rng.normal(0, 2, (2, 2, 6, 6)).astype(np.float32)}
    assert [n.op for n in import_onnx(model).nodes] == ["identity", "conv2d"]
    d = steps(ours(model, feeds)[0], onnxruntime(model, feeds)[0], 0.02)
    assert d.max() <= 1 and (d == 0).mean() > 0.98


def test_int8_outputs_keep_their_names_and_quantization():
    model = qop_conv(13)
    q = model.graph.node[1].output[0]  # the QLinearConv output, before its DequantizeLinear
    model.graph.output.insert(0, helper.make_tensor_value_info(q, I8, None))
    g = import_onnx(model)
    assert [t.name for t in g.outputs] == [q, model.graph.output[1].name]
    assert [(t.scale, t.zero_point) for t in g.outputs] == [(np.float32(0.1), 0)] * 2
    x = np.random.default_rng(0).normal(0, 1, (2, 2, 6, 6)).astype(np.float32)
    q8, f = InferenceSession(g, device="cpu").run(None, {"x": x}, output_type="int8")
    np.testing.assert_array_equal(q8, f)


@pytest.mark.parametrize("elem", [I8, U8])
def test_integer_ops_on_quantized_codes_match_onnxruntime(elem):
    """QOperator models run these ONNX ops on the int8/uint8 codes themselves (ONNX's
    integer semantics: Relu is max(code, 0), Clip and Pad values are codes)."""
    m = M(9)
    dt = np.int8 if elem == I8 else np.uint8
    y = m.node("Unsqueeze", [m.input("x", ["N", 2, 3, 4], elem), m.const(np.array([2], np.int64))])
    y = m.node("Squeeze", [y, m.const(np.array([2], np.int64))])
    y = m.node("Pad", [y, m.const(np.array([0, 0, 1, 0, 0, 1, 0, 2], np.int64)), m.const(dt(5))])
    y = m.node("Identity", [m.node("Transpose", [y], perm=[0, 1, 3, 2])])
    if elem == I8:  # ONNX has no Relu on uint8
        y = m.node("Relu", [y])
    y = m.node("MaxPool", [y], kernel_shape=[2, 2])
    y = m.node("Clip", [y, m.const(dt(3)), m.const(dt(120))])
    y = m.node("Flatten", [m.node("Reshape", [y, m.const(np.array([0, 1, 3, 15], np.int64))])],
               axis=2)  # axis 2 keeps the batch apart only after a size-1 axis 1
    m.output(y, elem)
    m.output(m.dq(y, 0.1, 7, dt))
    model = m.model(14)
    x = m.rng.integers(np.iinfo(dt).min, np.iinfo(dt).max + 1, (2, 2, 3, 4)).astype(dt)
    want = onnxruntime(model, {"x": x})[0].astype(np.int16) - (128 if elem == U8 else 0)
    codes = (x.astype(np.int16) - 128).astype(np.int8) if elem == U8 else x
    np.testing.assert_array_equal(ours(model, {"x": codes}, "int8")[0], want)
    ops = ["reshape", "reshape", "pad", "transpose"] + ["clip"] * (elem == I8) + [
        "max_pool", "clip", "reshape", "reshape", "identity"]
    assert [n.op for n in import_onnx(model).nodes] == ops


def test_prelu_slope_broadcasts_from_the_right():
    """A (C,) slope against (N, C, H, W) is per-W in ONNX, not per channel: rejected."""
    m = M()
    x = m.qdq(m.input("x", ["N", 4, 7, 6]), 0.1, 0)
    y = m.node("PRelu", [x, m.const(np.full(4, 0.25, np.float32))])
    m.output(m.dq(m.q(y, 0.1, 0), 0.1, 0))
    with pytest.raises(UnsupportedOpError, match="slope of shape \\[4\\] is not one value per"):
        import_onnx(m.model())
