"""reference/tables.py and reference/softmax.py, zero tolerance.

Independent computations: python scalar loops (math.exp, exact rationals) for the
tables and the softmax rule; ONNX Runtime's QLinearLeakyRelu, bit for bit. Agreement
with QLinearSigmoid, QDQ Tanh / HardSigmoid and QLinearSoftmax (which use MLAS
approximations and float sums) is measured (pytest -s -k onnxruntime).
"""
import math
from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu.reference.softmax import EXP_ONE, MAX_AXIS, softmax, softmax_params
from synapse_gpu.reference.tables import (hard_sigmoid_table, leaky_relu_table, lut, sigmoid_table, tanh_table,
                              unary_table)
from ort_helpers import agreement, rand_i8, rng_for

F32 = np.float32
CODES = np.arange(-128, 128, dtype=np.int8)






def ort_graph(nodes, feeds, inits, domain="", out=TensorProto.INT8):
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in feeds.items()]
    graph = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", out, None)],
                              initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()])
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def qlinear_unary(op, x, s_x, z_x, s_y, z_y, **attrs):
    node = helper.make_node(op, ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft", **attrs)
    inits = {"xs": F32(s_x), "xz": np.int8(z_x), "ys": F32(s_y), "yz": np.int8(z_y)}
    return ort_graph([node], {"x": x}, inits, "com.microsoft")


def qdq_unary(op, x, s_x, z_x, s_y, z_y, **attrs):
    """DequantizeLinear -> float op -> QuantizeLinear, unfused."""
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["f"]),
             helper.make_node(op, ["f"], ["g"], **attrs),
             helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    inits = {"xs": F32(s_x), "xz": np.int8(z_x), "ys": F32(s_y), "yz": np.int8(z_y)}
    return ort_graph(nodes, {"x": x}, inits)




def table_params(rng, n):
    """(s_x, z_x, s_y, z_y): zero points at both ends and odd, the usual 1/256 output."""
    out = []
    for i in range(n):
        s_x = F32([rng.uniform(0.001, 0.5), 2.0 ** -int(rng.integers(2, 7))][i % 2])
        z_x = int([-128, 127, rng.integers(-128, 128)][i % 3])
        s_y, z_y = [(F32(1 / 256), -128), (F32(rng.uniform(0.002, 0.05)), int(rng.integers(-128, 128)))][(i // 2) % 2]
        out.append((s_x, z_x, s_y, z_y))
    return out


# ---- lut and table construction ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 5), (256,)])
def test_lut(shape):
    rng = rng_for(shape)
    table = rand_i8(rng, 256)
    x = rand_i8(rng, shape)
    got = lut(x, table=table, fn="random")
    assert got.dtype == np.int8
    assert [int(v) for v in got.ravel()] == [int(table[int(v) + 128]) for v in x.ravel()]


def scalar_table(f, s_x, z_x, s_y, z_y):
    """The table by python scalars: DequantizeLinear, f in float64 -> float32, QuantizeLinear."""
    out = []
    for q in range(-128, 128):
        x = float(F32(F32(q - z_x) * F32(s_x)))
        y = F32(f(x))
        out.append(min(max(round(float(F32(y / F32(s_y)))) + z_y, -128), 127))  # round: half to even
    return np.array(out, dtype=np.int8)


def _sig(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


@pytest.mark.parametrize("i", range(8))
def test_tables_equal_scalar_construction(i):
    s_x, z_x, s_y, z_y = table_params(rng_for(i), 8)[i]
    np.testing.assert_array_equal(sigmoid_table(s_x, z_x, s_y, z_y), scalar_table(_sig, s_x, z_x, s_y, z_y))
    np.testing.assert_array_equal(tanh_table(s_x, z_x, s_y, z_y), scalar_table(math.tanh, s_x, z_x, s_y, z_y))
    a = F32(0.1)
    np.testing.assert_array_equal(leaky_relu_table(0.1, s_x, z_x, s_y, z_y),
                                  scalar_table(lambda v: v if v >= 0 else float(a * F32(v)), s_x, z_x, s_y, z_y))
    hs = scalar_table(lambda v: min(max(float(F32(F32(F32(0.2) * F32(v)) + F32(0.5))), 0.0), 1.0), s_x, z_x, s_y, z_y)
    np.testing.assert_array_equal(hard_sigmoid_table(0.2, 0.5, s_x, z_x, s_y, z_y), hs)
    np.testing.assert_array_equal(unary_table(lambda v: v, s_x, z_x, s_y, z_y),
                                  scalar_table(lambda v: v, s_x, z_x, s_y, z_y))


def test_leaky_relu_table_equals_onnxruntime():
    rng = np.random.default_rng(11)
    x = CODES.reshape(1, 256)
    for s_x, z_x, s_y, z_y in table_params(rng, 60):
        alpha = float(F32(rng.choice([0.01, 0.1, 0.2, rng.uniform(0.001, 0.9)])))
        table = leaky_relu_table(alpha, s_x, z_x, s_y, z_y)
        np.testing.assert_array_equal(lut(x, table=table),
                                      qlinear_unary("QLinearLeakyRelu", x, s_x, z_x, s_y, z_y, alpha=alpha))


def test_sigmoid_tanh_hardsigmoid_agreement_with_onnxruntime():
    rng = np.random.default_rng(12)
    x = CODES.reshape(1, 256)
    ours = {"QLinearSigmoid": [], "Tanh (QDQ)": [], "HardSigmoid (QDQ)": []}
    theirs = {k: [] for k in ours}
    tables_differ = 0
    params = table_params(rng, 10000)
    for s_x, z_x, s_y, z_y in params:
        t = lut(x, table=sigmoid_table(s_x, z_x, s_y, z_y))
        o = qlinear_unary("QLinearSigmoid", x, s_x, z_x, s_y, z_y)
        tables_differ += int(np.any(t != o))
        ours["QLinearSigmoid"].append(t.ravel())
        theirs["QLinearSigmoid"].append(o.ravel())
    for s_x, z_x, s_y, z_y in params[:300]:
        z_t = 0 if z_y == -128 else z_y  # tanh's range is symmetric
        ours["Tanh (QDQ)"].append(lut(x, table=tanh_table(s_x, z_x, s_y, z_t)).ravel())
        theirs["Tanh (QDQ)"].append(qdq_unary("Tanh", x, s_x, z_x, s_y, z_t).ravel())
        ours["HardSigmoid (QDQ)"].append(lut(x, table=hard_sigmoid_table(0.2, 0.5, s_x, z_x, s_y, z_y)).ravel())
        theirs["HardSigmoid (QDQ)"].append(qdq_unary("HardSigmoid", x, s_x, z_x, s_y, z_y, alpha=0.2, beta=0.5).ravel())
    print(f"\nQLinearSigmoid: {tables_differ} of {len(params)} tables differ somewhere")
    for k in ours:
        frac, dmax = agreement(k, np.concatenate(ours[k]), np.concatenate(theirs[k]))
        assert frac > 0.9999 and dmax <= 1


# ---- softmax ------------------------------------------------------------------------------


def scalar_softmax(x, s_x, s_y, z_y, axis, qmin=-128, qmax=127):
    """Python ints and exact rationals, one lane at a time."""
    E = [round(EXP_ONE * math.exp(-float(F32(s_x)) * d)) for d in range(256)]  # round: half to even
    R = math.floor(F32(1) / F32(s_y))
    xm = np.moveaxis(x, axis, -1)
    out = np.zeros(xm.shape, dtype=np.int8)
    for idx in np.ndindex(*xm.shape[:-1]):
        lane = [int(v) for v in xm[idx]]
        e = [E[max(lane) - v] for v in lane]
        S = sum(e)
        assert S < 2 ** 31
        out[idx] = [min(max(round(Fraction(ei * R, S)) + z_y, qmin), qmax) for ei in e]
    return np.moveaxis(out, -1, axis)


def test_softmax_params_table():
    p = softmax_params(F32(0.1), F32(1 / 256), -128)
    assert p["exp_table"].dtype == np.int32 and p["exp_table"].shape == (256,)
    assert p["exp_table"][0] == EXP_ONE == 2 ** 19 - 1 and MAX_AXIS * EXP_ONE < 2 ** 31
    assert np.all(np.diff(p["exp_table"].astype(np.int64)) <= 0)
    assert p["y_inv_scale"] == 256 and p["y_zero_point"] == -128
    assert softmax_params(F32(0.1), F32(0.0041), 0)["y_inv_scale"] == 243  # floor(243.9)


@pytest.mark.parametrize("shape,axis", [((2, 10), 1), ((2, 10), -1), ((2, 3, 7), 1), ((2, 5, 4, 3), 2),
                                        ((3, 1), 1), ((2, 3, 2), 2)])
@pytest.mark.parametrize("s_x,s_y,z_y", [(0.1, 1 / 256, -128), (0.02, 1 / 256, 127), (0.25, 0.0041, -3),
                                         (2.0 ** -4, 1 / 128, 0)])
def test_softmax_equals_scalar_rule(shape, axis, s_x, s_y, z_y):
    rng = rng_for(shape, axis, z_y)
    x = rand_i8(rng, shape)
    if shape[-1] == 2:
        x[0, 0] = [50, 50]  # exact ties of the division: 1/2 of R
    p = softmax_params(s_x, s_y, z_y)
    for qmin, qmax in [(-128, 127), (-100, 90)]:
        got = softmax(x, axis=axis, qmin=qmin, qmax=qmax, **p)
        np.testing.assert_array_equal(got, scalar_softmax(x, s_x, s_y, z_y, axis, qmin, qmax))


def test_softmax_axis_length_bound():
    p = softmax_params(0.05, 1 / 256, -128)
    x = np.full((1, MAX_AXIS), 7, dtype=np.int8)  # every element at the max: the largest sum
    y = softmax(x, axis=1, **p)
    np.testing.assert_array_equal(y, np.full_like(x, -128))  # 256 / 4096 -> rhe(0.0625) = 0
    x = np.random.default_rng(3).integers(-128, 128, (2, MAX_AXIS)).astype(np.int8)
    np.testing.assert_array_equal(softmax(x, axis=-1, **p), scalar_softmax(x, 0.05, 1 / 256, -128, -1))
    with pytest.raises(ValueError):
        softmax(np.zeros((1, MAX_AXIS + 1), dtype=np.int8), axis=1, **p)


def test_softmax_agreement_with_onnxruntime():
    rng = np.random.default_rng(13)
    ours_all, theirs_all = [], []
    for i in range(60):
        L = int(rng.choice([2, 3, 10, 33, 100, 256, 1000]))
        shape, axis = [((4, max(1, 2048 // L), L), -1), ((4, L, 8), 1)][i % 2]
        s_x = F32([rng.uniform(0.01, 0.3), 2.0 ** -int(rng.integers(2, 6))][i % 3 == 0])
        s_y, z_y = (F32(1 / 256), -128)
        if i % 4 == 3:  # an s_y that is not 1/integer: R = floor(1 / s_y)
            s_y, z_y = F32(rng.uniform(1 / 300, 1 / 120)), int(rng.integers(-128, -100))
        x = rand_i8(rng, shape)
        if i % 5 == 0:
            x = (x // 8).astype(np.int8)  # a narrow range: many near-equal probabilities
        if i % 7 == 0:
            x[..., 0] = 127  # one clear winner: p = 1 (code 256 + z_y, clamped) in some lanes
        p = softmax_params(s_x, s_y, z_y)
        node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft",
                                axis=axis, opset=13)
        theirs = ort_graph([node], {"x": x}, {"xs": s_x, "xz": np.int8(0), "ys": s_y, "yz": np.int8(z_y)},
                           "com.microsoft")
        ours_all.append(softmax(x, axis=axis, **p).ravel())
        theirs_all.append(theirs.ravel())
    frac, dmax = agreement("QLinearSoftmax (opset 13)", np.concatenate(ours_all), np.concatenate(theirs_all))
    assert frac > 0.9999 and dmax <= 1
