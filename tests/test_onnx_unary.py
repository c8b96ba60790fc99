"""Importer: float functions of one quantized tensor become one `lut` node
(synapse_gpu/onnx/unary.py), and the refused ops (synapse_gpu/onnx/refusals.py).

Each chain DequantizeLinear -> float ops -> QuantizeLinear must import as a single
lut whose table equals the python-scalar construction (tests/test_ref_unary.py), run
bit-exactly on every backend (cpu, cuda or the emulated device) and per sample.
Agreement with onnxruntime (int8 Q/DQ: exact there; the float ops in float32) is
measured: `pytest tests/test_onnx_unary.py -s -k onnxruntime`.
"""
import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import UnsupportedOpError
from synapse_gpu.onnx.importer import import_onnx
from synapse_gpu.reference.tables import lut

from ort_helpers import agreement, rng_for
from synapse_devices import device  # noqa: F401  (fixture)
from test_ref_unary import _hsig, _sig, _softplus, scalar_table

F32 = np.float32
N = helper.make_node
R2 = float(F32(math.sqrt(2)))

# name -> (float nodes from "f" to "g", scalar initializers, opset, python scalar function)
CHAINS = {
    "Gelu (Erf decomposition)": (
        [N("Div", ["f", "r2"], ["a"]), N("Erf", ["a"], ["b"]), N("Add", ["b", "one"], ["c"]),
         N("Mul", ["f", "c"], ["d"]), N("Mul", ["d", "half"], ["g"])],
        {"r2": R2, "one": 1.0, "half": 0.5}, 13,
        lambda v: v * (1 + math.erf(v / R2)) * 0.5),
    "Gelu": ([N("Gelu", ["f"], ["g"])], {}, 20, lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
    "SiLU x*Sigmoid(x)": ([N("Sigmoid", ["f"], ["s"]), N("Mul", ["f", "s"], ["g"])], {}, 13,
                          lambda v: v * _sig(v)),
    "HardSwish": ([N("HardSwish", ["f"], ["g"])], {}, 14, lambda v: v * _hsig(v, 1 / 6, 0.5)),
    "x*HardSigmoid(x)": ([N("HardSigmoid", ["f"], ["s"], alpha=1 / 6), N("Mul", ["s", "f"], ["g"])],
                         {}, 13, lambda v: _hsig(v, float(F32(1 / 6)), 0.5) * v),
    "HardSigmoid": ([N("HardSigmoid", ["f"], ["g"])], {}, 13, lambda v: _hsig(v, float(F32(0.2)), 0.5)),
    "Mish": ([N("Mish", ["f"], ["g"])], {}, 18, lambda v: v * math.tanh(_softplus(v))),
    "Softplus": ([N("Softplus", ["f"], ["g"])], {}, 13, _softplus),
    "Exp": ([N("Exp", ["f"], ["g"])], {}, 13, lambda v: math.exp(v)),
    "Erf then Clip": ([N("Erf", ["f"], ["a"]), N("Clip", ["a", "lo", "hi"], ["g"])],
                      {"lo": -0.5, "hi": 0.75}, 13, lambda v: min(max(math.erf(v), -0.5), 0.75)),
    "Tanh(x)^2": ([N("Tanh", ["f"], ["a"]), N("Pow", ["a", "two"], ["g"])], {"two": 2.0}, 13,
                  lambda v: math.tanh(v) ** 2),
}
# (s_x, z_x, s_y, z_y): zero points at both ends of the range and odd values
QPARAMS = [(0.05, -128, 0.02, -128), (0.04, 127, 0.03, 127), (2.0 ** -5, 3, 0.0117, -37)]


def chain_model(nodes, consts, opset, s_x, z_x, s_y, z_y, after=()):
    nodes = [N("DequantizeLinear", ["x", "xs", "xz"], ["f"]), *nodes, *after,
             N("QuantizeLinear", ["h" if after else "g", "ys", "yz"], ["y"])]
    inits = {"xs": F32(s_x), "xz": np.int8(z_x), "ys": F32(s_y), "yz": np.int8(z_y),
             **{k: F32(v) for k, v in consts.items()}}
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def run_ort(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("q", QPARAMS)
def test_chain_is_one_exact_table_on_every_backend(device, name, q):  # noqa: F811
    nodes, consts, opset, scalar = CHAINS[name]
    g = import_onnx(chain_model(nodes, consts, opset, *q))
    assert [n.op for n in g.nodes] == ["lut"]
    table = scalar_table(scalar, *q)
    x = np.arange(-128, 128, dtype=np.int8).reshape(8, 4, 8)  # every code
    x = np.concatenate([x, rng_for(len(name), q).integers(-128, 128, (3, 4, 8)).astype(np.int8)])
    sess = InferenceSession(g, device=device)
    y = sess.run(None, {"x": x}, output_type="int8")[0]
    np.testing.assert_array_equal(y, lut(x, table=table))
    for i in (0, 7, len(x) - 1):  # batch invariance: a sample alone gives its row
        np.testing.assert_array_equal(sess.run(None, {"x": x[i:i + 1]}, output_type="int8")[0], y[i:i + 1])


def test_clamp_after_the_chain_folds_into_the_table():
    nodes, consts, opset, scalar = CHAINS["HardSwish"]
    q = (0.05, 0, 0.02, -20)
    g = import_onnx(chain_model(nodes, consts, opset, *q, after=[N("Relu", ["g"], ["h"])]))
    assert [n.op for n in g.nodes] == ["lut"]
    np.testing.assert_array_equal(g.buffers[g.nodes[0].params["table"]],
                                  np.maximum(scalar_table(scalar, *q), -20))


def test_onnxruntime_agreement():
    """Every chain, 12 scale/zero-point sets each, all 256 codes: identical share printed."""
    rng = np.random.default_rng(9)
    x = np.arange(-128, 128, dtype=np.int8).reshape(8, 4, 8)
    for name, (nodes, consts, opset, _) in sorted(CHAINS.items()):
        ours, theirs = [], []
        for k in range(12):
            q = (float(F32(rng.uniform(0.005, 0.1))), int([-128, 127, rng.integers(-128, 128)][k % 3]),
                 float(F32(rng.uniform(0.004, 0.05))), int(rng.integers(-128, 128)))
            m = chain_model(nodes, consts, opset, *q)
            ours.append(InferenceSession(import_onnx(m), device="cpu").run(None, {"x": x}, output_type="int8")[0])
            theirs.append(run_ort(m, x))
        frac, dmax = agreement(f"{name} (QDQ, int8)", np.concatenate(ours), np.concatenate(theirs))
        assert frac >= 0.999 and dmax <= 1


def test_single_sigmoid_and_plain_arithmetic_keep_their_rules():
    g = import_onnx(chain_model([N("Sigmoid", ["f"], ["g"])], {}, 13, 0.05, 0, 1 / 256, -128))
    assert [(n.op, n.attrs["fn"]) for n in g.nodes] == [("lut", "sigmoid")]
    g = import_onnx(chain_model([N("Mul", ["f", "c"], ["g"])], {"c": 1.5}, 13, 0.05, 0, 0.02, 0))
    assert [n.op for n in g.nodes] == ["batchnorm"]


def test_nan_table_is_refused_naming_the_node():
    m = chain_model([N("Log", ["f"], ["g"], name="the_log")], {}, 13, 0.05, 0, 0.02, 0)
    with pytest.raises(UnsupportedOpError, match=r"'the_log'.*NaN at input code -128.*hint"):
        import_onnx(m)


def _one_node_model(node, inputs, outputs, opset=13):
    g = helper.make_graph([node], "m", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, None) for n, t in outputs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def test_dynamic_quantization_is_refused_with_the_static_route():
    m = _one_node_model(N("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dq0"),
                        [("x", TensorProto.FLOAT, ["N", 8])],
                        [("q", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8)])
    with pytest.raises(UnsupportedOpError, match=r"'dq0' \(op DynamicQuantizeLinear\).*synapse quantize"):
        import_onnx(m)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_recurrent_layers_are_refused_with_conv1d_advice(op):
    m = _one_node_model(N(op, ["x", "w", "r"], ["y"], name="rec", hidden_size=4),
                        [("x", TensorProto.FLOAT, [5, "N", 3]), ("w", TensorProto.FLOAT, [1, 16, 3]),
                         ("r", TensorProto.FLOAT, [1, 16, 4])], [("y", TensorProto.FLOAT)])
    with pytest.raises(UnsupportedOpError, match=rf"'rec' \(op {op}\).*Conv1D"):
        import_onnx(m)
