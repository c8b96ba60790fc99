"""Edge rules of reference/requant.py and reference/boundary.py.

The independent computation is the float32 formula the integer rule emulates,
    y = clamp(rint_half_even(f32(f32(acc) * M)) + z, qmin, qmax)
evaluated with numpy float32 (IEEE, correctly rounded), and ONNX Runtime's
QuantizeLinear / DequantizeLinear for the boundary.
"""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu.reference.boundary import dequantize, quantize
from synapse_gpu.reference.requant import (bit_length, multiplier_value, quantize_multiplier,
                                           requant, round_shift)

F32 = np.float32
ZPS = [-128, -37, 0, 5, 127]


def float_formula(acc, M, z, qmin=-128, qmax=127):
    with np.errstate(over="ignore"):
        p = np.asarray(acc).astype(F32) * np.asarray(M, dtype=F32)  # both IEEE float32 roundings
    return np.clip(np.rint(p) + z, qmin, qmax).astype(np.int8)


def requant_f(acc, M, z, qmin=-128, qmax=127):
    m, k = quantize_multiplier(M)
    return requant(np.asarray(acc, dtype=np.int64), m, k, z, qmin, qmax)


EDGE_M = [F32(v) for v in [
    1.0, 0.5, 0.25, 1 / 3, 0.1, 0.0123, 2.0 ** -20, 2.0 ** -40, 2.0 ** -126,
    np.finfo(F32).tiny / 2, 1e-45, np.finfo(F32).smallest_subnormal * 3,  # subnormal M
    3.0, 255.0, 2.0 ** 23, 2.0 ** 24, 2.0 ** 30, 1e30, np.finfo(F32).max, 0.0]]
EDGE_ACC = [0, 1, -1, 2, -2, 3, 127, 255, -255, 2 ** 24 - 1, 2 ** 24, 2 ** 24 + 1, 2 ** 24 + 3,
            -(2 ** 24 + 1), 2 ** 30 + 64, 2 ** 31 - 1, -(2 ** 31), -(2 ** 31) + 1]


@pytest.mark.parametrize("z", ZPS)
def test_edges_match_float_formula(z):
    acc = np.array(EDGE_ACC, dtype=np.int64)
    for M in EDGE_M:
        np.testing.assert_array_equal(requant_f(acc, M, z), float_formula(acc, M, z), err_msg=f"M={M!r}")


@pytest.mark.parametrize("z", ZPS)
def test_acc_zero_gives_zero_point(z):
    for M in EDGE_M:
        assert requant_f(0, M, z) == z


def test_multiplier_decomposition():
    Ms = np.array(EDGE_M, dtype=F32)
    m, k = quantize_multiplier(Ms)
    assert np.all((m >= 0) & (m < 2 ** 24))
    for Mi, mi, ki in zip(Ms, m, k):
        assert multiplier_value(mi, ki) == Mi
    assert (m[-1], k[-1]) == (0, 0)  # M = 0
    assert np.all(k[(Ms < 2.0 ** -40) & (Ms > 0)] >= 63)  # tiny M: k >= 63 -> every result is z
    assert np.all(k[Ms >= 2.0 ** 24] <= 0)  # huge M: k <= 0 -> saturates
    for bad in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def test_huge_and_tiny_multipliers_saturate_or_vanish():
    acc = np.array([1, -1, 2 ** 31 - 1, -(2 ** 31)], dtype=np.int64)
    np.testing.assert_array_equal(requant_f(acc, F32(2.0 ** 30), 0), [127, -128, 127, -128])
    np.testing.assert_array_equal(requant_f(acc, np.finfo(F32).max, -128), [127, -128, 127, -128])
    np.testing.assert_array_equal(requant_f(acc, F32(1e-45), 127), [127] * 4)
    np.testing.assert_array_equal(requant_f(acc, F32(2.0 ** -40), 0), [0, 0, 0, 0])


def test_exact_ties_round_half_to_even():
    # acc * 0.5: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2, then + z
    acc = np.array([1, 3, 5, -1, -3, -5], dtype=np.int64)
    np.testing.assert_array_equal(requant_f(acc, F32(0.5), 0), [0, 2, 2, 0, -2, -2])
    np.testing.assert_array_equal(requant_f(acc, F32(0.5), 1), [1, 3, 3, 1, -1, -1])
    # ties of the first rounding (int32 -> 24 bits): 2^24 + 1 -> 2^24, 2^24 + 3 -> 2^24 + 4
    acc = np.array([2 ** 24 + 1, 2 ** 24 + 3], dtype=np.int64)
    np.testing.assert_array_equal(requant_f(acc, F32(2.0 ** -20), 0), [16, 16])
    np.testing.assert_array_equal(requant_f(np.int64(2 ** 24 + 3), F32(2.0 ** -2), -128), 127)
    # tie of the product rounding: a * m needs 25 bits and ends in a half
    m_odd = F32((2 ** 24 - 1) * 2.0 ** -30)  # m = 2^24 - 1
    acc = np.array([3, 5, 7, 2 ** 23 + 1], dtype=np.int64)
    np.testing.assert_array_equal(requant_f(acc, m_odd, 0), float_formula(acc, m_odd, 0))


@pytest.mark.parametrize("z", [-128, 127])
def test_zero_point_extremes_and_clamps(z):
    acc = np.arange(-600, 600, dtype=np.int64)
    for qmin, qmax in [(-128, 127), (z if z < 0 else -128, 127), (0, 6), (-5, -5)]:
        np.testing.assert_array_equal(requant_f(acc, F32(0.37), z, qmin, qmax),
                                      float_formula(acc, F32(0.37), z, qmin, qmax))


def test_millions_of_random_pairs_match_float_formula():
    rng = np.random.default_rng(12345)
    n = 3_000_000
    # M: log-uniform over 2^-48 .. 2^12, a slice of subnormal and huge values
    M = (2.0 ** rng.uniform(-48, 12, n)).astype(F32)
    M[: n // 50] = (rng.integers(1, 2 ** 23, n // 50) * 2.0 ** -149).astype(F32)
    M[n // 50: n // 25] = (2.0 ** rng.uniform(12, 127, n // 50)).astype(F32)
    # acc: full int32 range, and log-uniform magnitudes (small accs are common)
    acc = rng.integers(-(2 ** 31), 2 ** 31, n, dtype=np.int64)
    small = rng.random(n) < 0.6
    mag = np.floor(2.0 ** rng.uniform(0, 31, n)).astype(np.int64)
    acc[small] = (mag * rng.choice([-1, 1], n))[small]
    z = rng.integers(-128, 128, n)
    m, k = quantize_multiplier(M)
    np.testing.assert_array_equal(requant(acc, m, k, z), float_formula(acc, M, z))


def test_round_shift_exact_near_int64_limit():
    vals = [2 ** 63 - 1, -(2 ** 63 - 1), 2 ** 62 + 2 ** 40, -(2 ** 62) - 1, 3 * 2 ** 60, 12345]
    for s in [0, 1, 2, 30, 40, 61, 62]:
        got = round_shift(np.array(vals, dtype=np.int64), s)
        want = [_rhe_div(v, s) for v in vals]
        assert [int(g) for g in got] == want, s


def _rhe_div(v, s):
    q, r = divmod(v, 2 ** s)  # floor division on python ints
    if 2 * r > 2 ** s or (2 * r == 2 ** s and q % 2):
        q += 1
    return q


def test_bit_length_matches_python():
    vals = [0, 1, 2, 3, 2 ** 24 - 1, 2 ** 24, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 1, 2 ** 62 - 1, 2 ** 62,
            2 ** 63 - 1]
    got = bit_length(np.array(vals, dtype=np.int64))
    assert [int(g) for g in got] == [v.bit_length() for v in vals]


# ---- boundary -------------------------------------------------------------------------


def _ort_single(op, x, scale, zp, out_type):
    node = helper.make_node(op, ["x", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)],
        [helper.make_tensor_value_info("y", out_type, None)],
        initializer=[numpy_helper.from_array(np.array(scale, dtype=F32), "s"),
                     numpy_helper.from_array(np.array(zp, dtype=np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_quantize_rejects_nan_and_saturates_inf():
    with pytest.raises(ValueError):
        quantize(np.array([1.0, np.nan], dtype=F32), 0.1, 0)
    np.testing.assert_array_equal(quantize(np.array([np.inf, -np.inf], dtype=F32), 0.1, 3), [127, -128])


@pytest.mark.parametrize("z", [-128, -7, 0, 127])
@pytest.mark.parametrize("scale", [0.0173, 2.0 ** -5, 1 / 3, 5.5])
def test_boundary_matches_onnxruntime(scale, z):
    rng = np.random.default_rng(abs(z) + int(scale * 1000))
    s = F32(scale)
    x = (rng.standard_normal(20000) * 200 * s).astype(F32)
    ties = ((rng.integers(-300, 300, 2000) + F32(0.5)) * s).astype(F32)  # k + 1/2 steps
    x = np.concatenate([x, ties, np.array([np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], dtype=F32)])
    np.testing.assert_array_equal(quantize(x, s, z), _ort_single("QuantizeLinear", x, s, z, TensorProto.INT8))
    q = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(dequantize(q, s, z), _ort_single("DequantizeLinear", q, s, z, TensorProto.FLOAT))
