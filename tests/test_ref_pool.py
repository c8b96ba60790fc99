"""reference/pool.py against independent computations, zero tolerance.

max_pool: ONNX Runtime's MaxPool on int8 (same rule). avg_pool: a plain python
window loop with the float formula of the rounding; agreement with ONNX Runtime's
QLinearAveragePool and float AveragePool is measured (pytest -s -k onnxruntime).
global_avg_pool: ONNX Runtime's QLinearGlobalAveragePool, bit for bit.
"""
import itertools

import numpy as np
import pytest
from onnx import TensorProto

from synapse_gpu.reference.pool import avg_pool, global_avg_pool, max_pool
from synapse_gpu.reference.requant import quantize_multiplier
from ort_helpers import agreement, ort_node, rand_i8, rng_for

F32 = np.float32

# (spatial shape, kernel_shape, strides, pads, dilations, ceil_mode); ONNX Runtime needs pads < kernel
CASES = [
    ((7,), [3], [1], [0, 0], [1], 0),
    ((8,), [2], [2], [1, 1], [1], 1),
    ((6,), [3], [2], [1, 1], [1], 1),
    ((9,), [3], [2], [2, 1], [2], 1),
    ((5, 6), [2, 3], [1, 2], [0, 1, 1, 2], [1, 1], 0),
    ((6, 7), [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1),
    ((7, 5), [2, 2], [2, 1], [1, 0, 1, 1], [2, 1], 0),
    ((6, 6), [3, 2], [3, 2], [2, 1, 0, 1], [1, 2], 1),
    ((4, 5, 3), [2, 2, 2], [1, 2, 1], [1, 0, 0, 0, 1, 1], [1, 1, 1], 1),
    ((5, 4, 4), [3, 1, 2], [2, 1, 2], [0, 0, 1, 2, 0, 1], [1, 1, 2], 0),
]


def attrs_of(case):
    _, k, s, p, d, c = case
    return dict(kernel_shape=k, strides=s, pads=p, dilations=d, ceil_mode=c)










def avg_tables(s_x, s_y, V):
    """multiplier/shift tables, entry n = f32(f32(s_x / s_y) / n); entry 0 unused."""
    M = [F32(0)] + [F32(F32(s_x / s_y) / F32(n)) for n in range(1, V + 1)]
    return quantize_multiplier(np.array(M, dtype=F32))


# ---- an independent window enumeration ---------------------------------------------------


def axis_windows(n, k, s, pb, pe, d, ceil_mode):
    """Window starts along one axis, enumerated one by one from ONNX's definition:
    a window fits if its last tap is inside the padded input; ceil_mode adds the
    partial windows that start before the next stride step and inside the input."""
    span = d * (k - 1) + 1
    starts, start = [], -pb
    while True:
        fits = start + span <= n + pe
        partial = ceil_mode and start < n and start - s + span < n + pe
        if not (fits or partial):
            return starts
        starts.append(start)
        start += s


def loop_pool(x, kind, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad=0, zx=0):
    """max, or (sum, count) of avg, per output position, with python loops."""
    nd = len(kernel_shape)
    sp = x.shape[2:]
    per_axis = [axis_windows(sp[i], kernel_shape[i], strides[i], pads[i], pads[nd + i], dilations[i],
                             ceil_mode) for i in range(nd)]
    out_shape = x.shape[:2] + tuple(len(w) for w in per_axis)
    res = np.zeros(out_shape, dtype=np.int64)
    cnt = np.zeros(out_shape, dtype=np.int64)
    for nc in np.ndindex(*x.shape[:2]):
        for o in itertools.product(*[range(len(w)) for w in per_axis]):
            vals, n_in_pad = [], 0
            for t in itertools.product(*[range(k) for k in kernel_shape]):
                pos = [per_axis[i][o[i]] + t[i] * dilations[i] for i in range(nd)]
                if all(-pads[i] <= pos[i] < sp[i] + pads[nd + i] for i in range(nd)):
                    n_in_pad += 1
                if all(0 <= pos[i] < sp[i] for i in range(nd)):
                    vals.append(int(x[nc + tuple(pos)]))
            if kind == "max":
                res[nc + o] = max(vals, default=-128)
            else:
                res[nc + o] = sum(v - zx for v in vals)
                cnt[nc + o] = n_in_pad if count_include_pad else len(vals)
    return res, cnt


# ---- max_pool ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_max_pool_equals_onnxruntime(case):
    x = rand_i8(rng_for(len(case[0]), case[0]), (2, 3) + case[0])
    a = attrs_of(case)
    got = max_pool(x, **a)
    np.testing.assert_array_equal(got, ort_node("MaxPool", ["x"], {"x": x}, {}, a))
    np.testing.assert_array_equal(got, loop_pool(x, "max", **a)[0])


def test_max_pool_window_without_valid_tap():
    x = np.array([[[5, -7]]], dtype=np.int8)  # pads >= kernel: the last window is all padding
    got = max_pool(x, kernel_shape=[1], strides=[1], pads=[0, 2], dilations=[1])
    np.testing.assert_array_equal(got, [[[5, -7, -128, -128]]])


# ---- avg_pool ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("zx,zy", [(-128, 127), (127, -128), (-3, 5)])
def test_avg_pool_equals_python_loop(case, cip, zx, zy):
    rng = rng_for(case[0], case[1], cip, zx, zy)
    x = rand_i8(rng, (2, 3) + case[0])
    a = attrs_of(case)
    s_x, s_y = F32(0.02), F32(rng.choice([0.02, 0.01, rng.uniform(0.005, 0.05)]))
    V = int(np.prod(a["kernel_shape"]))
    m, k = avg_tables(s_x, s_y, V)
    total, count = loop_pool(x, "avg", count_include_pad=cip, zx=zx, **a)
    M = np.array([F32(0)] + [F32(F32(s_x / s_y) / F32(n)) for n in range(1, V + 1)], dtype=F32)[count]
    for qmin, qmax in [(-128, 127), (-10, 90)]:
        got = avg_pool(x, multiplier=m, shift=k, x_zero_point=zx, y_zero_point=zy, count_include_pad=cip,
                       qmin=qmin, qmax=qmax, **a)
        # rhe(f32(f32(sum) * M/n) + z_y); the float64 sum with an integer is exact near ties
        want = np.clip(np.rint((total.astype(F32) * M).astype(np.float64) + zy), qmin, qmax)
        np.testing.assert_array_equal(got, want.astype(np.int8))


def _agreement_cases(rng):
    for i, case in enumerate(CASES):
        if case[4] != [1] * len(case[1]):
            continue  # QLinearAveragePool has no dilations
        for cip in (0, 1):
            for kind in range(3):
                # power-of-two scales (exact in float), equal scales (ties), random scales
                s_x = [F32(2.0 ** -int(rng.integers(3, 8))), F32(rng.uniform(0.002, 0.1))][kind > 0]
                s_y = [F32(2.0 ** -int(rng.integers(3, 8))), s_x, F32(rng.uniform(0.002, 0.1))][kind]
                yield case, cip, s_x, s_y, kind == 0


def test_avg_pool_agreement_with_onnxruntime():
    rng = np.random.default_rng(99)
    q_ours, q_theirs, f_ours, f_theirs, o_ours, o_theirs = [], [], [], [], [], []
    for case, cip, s_x, s_y, exact in _agreement_cases(rng):
        zx, zy = (int(v) for v in rng.integers(-128, 128, 2))
        x = rand_i8(rng, (4, 128) + case[0])
        a = attrs_of(case)
        del a["dilations"]
        m, k = avg_tables(s_x, s_y, int(np.prod(a["kernel_shape"])))
        ours = avg_pool(x, multiplier=m, shift=k, x_zero_point=zx, y_zero_point=zy, count_include_pad=cip, **a)
        inits = {"xs": s_x, "xz": np.int8(zx), "ys": s_y, "yz": np.int8(zy)}
        theirs = ort_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], {"x": x}, inits,
                          dict(a, count_include_pad=cip), "com.microsoft")
        overhang = a["ceil_mode"] and cip  # QLinearAveragePool divides by the whole kernel there
        if exact and not overhang:
            np.testing.assert_array_equal(ours, theirs)
        (o_ours if overhang else q_ours).append(ours.ravel())
        (o_theirs if overhang else q_theirs).append(theirs.ravel())
        # float AveragePool between DequantizeLinear and QuantizeLinear: checks the count rule
        xf = (x.astype(F32) - F32(zx)) * s_x
        avg = ort_node("AveragePool", ["x"], {"x": xf}, {}, dict(a, count_include_pad=cip), out=TensorProto.FLOAT)
        f_ours.append(ours.ravel())
        f_theirs.append(np.clip(np.rint(avg / s_y) + zy, -128, 127).astype(np.int8).ravel())
    frac, dmax = agreement("QLinearAveragePool (no ceil_mode overhang with count_include_pad)",
                           np.concatenate(q_ours), np.concatenate(q_theirs))
    assert frac > 0.98 and dmax <= 1
    agreement("QLinearAveragePool, ceil_mode and count_include_pad", np.concatenate(o_ours),
              np.concatenate(o_theirs))
    frac, dmax = agreement("DequantizeLinear-AveragePool-QuantizeLinear", np.concatenate(f_ours),
                           np.concatenate(f_theirs))
    assert frac > 0.9 and dmax <= 1  # same count rule: no difference above one step


# ---- global_avg_pool -------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(1,), (7,), (3, 5), (8, 8), (2, 3, 4)])
@pytest.mark.parametrize("zx,zy", [(-128, 127), (127, -128), (-1, 3), (0, 0)])
def test_global_avg_pool_equals_onnxruntime(spatial, zx, zy):
    rng = rng_for(spatial, zx, zy)
    x = rand_i8(rng, (2, 24) + spatial)
    n = int(np.prod(spatial))
    for s_x, s_y in [(F32(0.05), F32(0.05)), (F32(2.0 ** -5), F32(2.0 ** -6)),
                     (F32(rng.uniform(0.001, 0.1)), F32(rng.uniform(0.001, 0.1)))]:
        M = F32(s_x / F32(s_y * F32(n)))
        m, k = quantize_multiplier(M)
        got = global_avg_pool(x, multiplier=m, shift=k, x_zero_point=zx, y_zero_point=zy)
        assert got.shape == (2, 24) + (1,) * len(spatial)
        inits = {"xs": s_x, "xz": np.int8(zx), "ys": s_y, "yz": np.int8(zy)}
        np.testing.assert_array_equal(got, ort_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"],
                                                    {"x": x}, inits, {"channels_last": 0}, "com.microsoft"))
        total = (x.astype(np.int64) - zx).reshape(2, 24, -1).sum(axis=2).reshape(got.shape)
        got = global_avg_pool(x, multiplier=m, shift=k, x_zero_point=zx, y_zero_point=zy, qmin=-5, qmax=50)
        want = np.clip(np.rint(total.astype(F32) * M) + zy, -5, 50)
        np.testing.assert_array_equal(got, want.astype(np.int8))


def test_global_avg_pool_other_multiplier_order_agreement():
    """M = f32(f32(s_x / s_y) / n) instead of ONNX Runtime's f32(s_x / f32(s_y * n))."""
    rng = np.random.default_rng(5)
    ours, theirs = [], []
    for i in range(30):
        spatial = tuple(int(v) for v in rng.integers(1, 9, 2))
        n = int(np.prod(spatial))
        x = rand_i8(rng, (1, 256) + spatial)
        s_x = F32(rng.uniform(0.001, 0.1))
        s_y = [s_x, F32(s_x * rng.uniform(0.2, 3))][i % 2]
        zx, zy = (int(v) for v in rng.integers(-128, 128, 2))
        m, k = quantize_multiplier(F32(F32(s_x / s_y) / F32(n)))
        ours.append(global_avg_pool(x, multiplier=m, shift=k, x_zero_point=zx, y_zero_point=zy).ravel())
        inits = {"xs": s_x, "xz": np.int8(zx), "ys": s_y, "yz": np.int8(zy)}
        theirs.append(ort_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], {"x": x}, inits,
                               {"channels_last": 0}, "com.microsoft").ravel())
    frac, dmax = agreement("QLinearGlobalAveragePool with M = f32(f32(s_x/s_y)/n)", np.concatenate(ours),
                           np.concatenate(theirs))
    assert frac > 0.99 and dmax <= 1
