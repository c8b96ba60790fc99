"""Valid seed models for the fuzzers: small, fast, and together covering every op."""
from __future__ import annotations

import functools
import os

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import build
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.graph import GraphBuilder

EXAMPLES = os.path.join(os.path.dirname(build.__file__), "examples")


def ops_mix(seed=1):
    """The ops tiny_cnn lacks: conv1d/3d, matmul, requantize, relu, clip, lut, softmax, mul,
    concat, pad, transpose, reshape, identity."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.integers(-127, 128, shape).astype(np.int8)

    b = GraphBuilder()
    x = b.add_input("x", (-1, 4, 6), 0.02, 3)
    h = build.conv(b, x, w(4, 4, 3), 0.004, None, y_scale=0.05, y_zero_point=-2, pads=[1, 1])
    h = build.requantize(b, h, y_scale=0.04, y_zero_point=1)
    h = build.relu(b, h)
    h = build.clip(b, h, 0.0, 3.0)
    t = build.unary(b, h, "sigmoid", y_scale=1 / 256, y_zero_point=-128)
    m = build.mul(b, h, t, y_scale=0.03, y_zero_point=0)
    c = build.concat(b, [h, m], 1, y_scale=0.05, y_zero_point=2)
    p = build.pad(b, c, [0, 0, 1, 0, 0, 2], mode="reflect")
    tr = build.transpose(b, p, [0, 2, 1])
    mm = build.matmul(b, p, tr, y_scale=0.5, y_zero_point=0)
    r = build.reshape(b, mm, [8, 1, 4, 2])
    v = build.conv(b, r, w(2, 8, 1, 3, 1), 0.01, None, y_scale=0.2, y_zero_point=0,
                   pads=[0, 1, 0, 0, 1, 0])
    s = build.softmax(b, v, axis=1)
    b.add_output(s, "probs")
    b.add_output(b.add_node("identity", [h], out_quant=b.quant[h]), "feature")
    return b.build({"name": "ops_mix"})


@functools.lru_cache(maxsize=None)
def syn_seeds():
    """name -> Graph."""
    from synapse_gpu.errors import SynapseError
    from synapse_gpu.modelfile import load_model
    from synapse_gpu.validate import validate

    seeds = {"tiny_cnn": tiny_cnn(seed=3, channels=4, size=8), "ops_mix": ops_mix()}
    try:
        seeds["digits"] = g = load_model(os.path.join(EXAMPLES, "digits.syn"))
        validate(g)
    except SynapseError:  # a shipped file gone stale (a rule change in progress): no seed
        del seeds["digits"]
    return seeds


def _t(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def qoperator_conv():
    """int8 x -> QLinearConv -> QLinearGlobalAveragePool-free DequantizeLinear -> y."""
    inits = {"xs": np.float32(0.02), "xz": np.int8(3), "w": np.arange(72).reshape(4, 2, 3, 3)
             .astype(np.int8) - 30, "ws": np.full(4, 0.01, np.float32), "wz": np.zeros(4, np.int8),
             "ys": np.float32(0.1), "yz": np.int8(-5), "b": np.arange(4, dtype=np.int32)}
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                              ["q"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1]),
             helper.make_node("DequantizeLinear", ["q", "ys", "yz"], ["y"], name="dq")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8,
                                                                     ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [_t(k, v) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def qdq_chain():
    """float x -> Q/DQ -> Conv -> Relu -> Q/DQ -> MaxPool -> Q/DQ -> Flatten -> Gemm -> Q/DQ."""
    rng = np.random.default_rng(5)
    inits = [_t("s", np.float32(0.05)), _t("z", np.int8(0)), _t("sw", np.float32(0.01)),
             _t("w", rng.integers(-100, 100, (3, 2, 3, 3)).astype(np.int8)),
             _t("g", rng.integers(-100, 100, (5, 12)).astype(np.int8)),
             _t("shape", np.array([0, -1], np.int64))]
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["xq"]), n("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             n("DequantizeLinear", ["w", "sw", "z"], ["wd"]),
             n("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv"),
             n("Relu", ["c"], ["r"]), n("QuantizeLinear", ["r", "s", "z"], ["rq"]),
             n("DequantizeLinear", ["rq", "s", "z"], ["rd"]),
             n("MaxPool", ["rd"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             n("QuantizeLinear", ["p", "s", "z"], ["pq"]), n("DequantizeLinear", ["pq", "s", "z"], ["pd"]),
             n("Reshape", ["pd", "shape"], ["f"], name="flat"),
             n("DequantizeLinear", ["g", "sw", "z"], ["gd"]),
             n("Gemm", ["f", "gd"], ["o"], transB=1, name="fc"),
             n("QuantizeLinear", ["o", "s", "z"], ["oq"]), n("DequantizeLinear", ["oq", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["N", 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@functools.lru_cache(maxsize=None)
def onnx_seeds():
    """name -> serialized ONNX bytes."""
    seeds = {"qoperator_conv": qoperator_conv().SerializeToString(),
             "qdq_chain": qdq_chain().SerializeToString()}
    with open(os.path.join(EXAMPLES, "digits_int8.onnx"), "rb") as f:
        seeds["digits"] = f.read()
    return seeds
