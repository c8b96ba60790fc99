"""reference/dense.py (dense, matmul) against independent computations, zero tolerance:
plain python loops, the ONNX reference evaluator's MatMulInteger (accumulator), and
onnxruntime's QLinearMatMul bit for bit (int8 and uint8, per-tensor and per-column)."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ort_helpers import ort_u8s8_exact, ort_weight_range
from synapse_gpu.reference.dense import dense, matmul
from synapse_gpu.reference.requant import quantize_multiplier, requant

F32 = np.float32

# (id, x_zero_point, y_zero_point, w_zero_point kind, qmin, qmax)
ZERO_POINTS = [
    ("zp0", 0, 0, "zero", -128, 127),
    ("x-128-y127", -128, 127, "zero", -128, 127),
    ("x127-y-128-wodd", 127, -128, "odd", -128, 127),
    ("x3-y-5-wmixed", 3, -5, "mixed", -128, 127),
    ("relu6", -9, -20, "odd", -20, 60),
]
X_SHAPES = [(1, 16), (5, 33), (2, 3, 20), (2, 2, 3, 7)]


def dense_case(rng, x_shape, M, zps, trans_w, per_channel):
    _, zx, zy, wz_kind, qmin, qmax = zps
    K = x_shape[-1]
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    w = rng.integers(-128, 128, (M, K) if trans_w else (K, M)).astype(np.int8)
    wz = {"zero": np.zeros(M), "odd": np.full(M, 5), "mixed": rng.integers(-9, 10, M)}[wz_kind]
    s_x = F32(rng.uniform(0.01, 0.05))
    s_w = rng.uniform(0.002, 0.02, M if per_channel else 1).astype(F32)
    s_w = np.broadcast_to(s_w, (M,)).astype(F32)
    acc_std = np.sqrt(K) * 74.0 * 74.0
    s_y = F32(s_x * float(s_w.mean()) * acc_std / 40)
    m, k = quantize_multiplier((s_x * s_w) / s_y)
    return x, dict(w=w, bias=rng.integers(-acc_std / 2, acc_std / 2, M).astype(np.int32),
                   multiplier=m, shift=k, w_zero_point=wz.astype(np.int32), x_zero_point=zx,
                   y_zero_point=zy, trans_w=trans_w, qmin=qmin, qmax=qmax)


def loop_dense(x, p):
    W = p["w"].T if p["trans_w"] else p["w"]
    K, M = W.shape
    rows = x.reshape(-1, K)
    y = np.zeros((rows.shape[0], M), np.int8)
    for r in range(rows.shape[0]):
        for j in range(M):
            acc = int(p["bias"][j])
            for k in range(K):
                acc += ((int(rows[r, k]) - p["x_zero_point"])
                        * (int(W[k, j]) - int(p["w_zero_point"][j])))
            y[r, j] = requant(acc, p["multiplier"][j], p["shift"][j], p["y_zero_point"],
                              p["qmin"], p["qmax"])
    return y.reshape(x.shape[:-1] + (M,))


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("trans_w", [0, 1], ids=["w-KM", "w-MK"])
@pytest.mark.parametrize("zps", ZERO_POINTS, ids=[z[0] for z in ZERO_POINTS])
@pytest.mark.parametrize("x_shape", X_SHAPES, ids=str)
def test_dense_matches_loops(x_shape, zps, trans_w, per_channel):
    rng = np.random.default_rng([X_SHAPES.index(x_shape), ZERO_POINTS.index(zps), trans_w,
                                 per_channel])
    x, p = dense_case(rng, x_shape, 6, zps, trans_w, per_channel)
    y = dense(x, **p)
    assert y.dtype == np.int8 and y.shape == x.shape[:-1] + (6,)
    np.testing.assert_array_equal(y, loop_dense(x, p))
    assert len(np.unique(y)) >= min(8, y.size // 8)


def ort_qlinearmatmul(a, s_a, za, b, s_b, zb, s_y, zy, b_const):
    """QLinearMatMul; s_b, zb per column (1-D) or per tensor (0-D)."""
    et = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}
    inits = [numpy_helper.from_array(np.array(s_a, F32), "as"),
             numpy_helper.from_array(np.array(za, a.dtype), "az"),
             numpy_helper.from_array(np.asarray(s_b, F32), "bs"),
             numpy_helper.from_array(np.asarray(zb, b.dtype), "bz"),
             numpy_helper.from_array(np.array(s_y, F32), "ys"),
             numpy_helper.from_array(np.array(zy, a.dtype), "yz")]
    inputs = [helper.make_tensor_value_info("a", et[a.dtype], a.shape)]
    feeds = {"a": a}
    if b_const:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", et[b.dtype], b.shape))
        feeds["b"] = b
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", et[a.dtype], None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _to_unsigned(v, dtype):
    return (np.asarray(v).astype(np.int16) + (128 if dtype == np.uint8 else 0)).astype(dtype)


def _to_signed(v):
    return (v.astype(np.int16) - 128).astype(np.int8) if v.dtype == np.uint8 else v


@pytest.mark.parametrize("scales", ["random", "pow2"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-column"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8], ids=["int8", "uint8"])
@pytest.mark.parametrize("x_shape", [(7, 48), (2, 5, 300)], ids=str)
def test_dense_bit_exact_with_onnxruntime(x_shape, dtype, per_channel, scales):
    """dense = QLinearMatMul with a constant int8 weight (K, M), scales per column."""
    rng = np.random.default_rng([x_shape[-1], dtype == np.uint8, per_channel, scales == "pow2"])
    K, M = x_shape[-1], 9
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    w = rng.integers(*ort_weight_range(dtype), (K, M)).astype(np.int8)
    zx, zy = int(rng.integers(-64, 64)) | 1, int(rng.integers(-64, 64)) | 1
    n_scales = M if per_channel else 1
    if scales == "pow2":
        s_x = F32(2.0 ** -int(rng.integers(4, 8)))
        s_w = (2.0 ** -rng.integers(5, 9, n_scales)).astype(F32)
        s_y = F32(2.0 ** round(np.log2(float(s_x) * float(s_w.mean()) * np.sqrt(K) * 5476 / 40)))
    else:
        s_x = F32(rng.uniform(0.01, 0.05))
        s_w = rng.uniform(0.002, 0.02, n_scales).astype(F32)
        s_y = F32(s_x * float(s_w.mean()) * np.sqrt(K) * 5476 / 40)
    y_ort = ort_qlinearmatmul(_to_unsigned(x, dtype), s_x, _to_unsigned(zx, dtype), w,
                              s_w if per_channel else s_w[0],
                              np.zeros(M if per_channel else (), np.int8), s_y,
                              _to_unsigned(zy, dtype), b_const=True)
    m, k = quantize_multiplier((s_x * np.broadcast_to(s_w, (M,))) / s_y)
    y = dense(x, w=w, bias=np.zeros(M, np.int32), multiplier=m, shift=k,
              w_zero_point=np.zeros(M, np.int32), x_zero_point=zx, y_zero_point=zy, trans_w=0)
    np.testing.assert_array_equal(y, _to_signed(y_ort))
    assert len(np.unique(y)) >= 20


def loop_matmul(a, b, p):
    a2, b2 = np.broadcast_arrays(a[..., :, :, None], b[..., None, :, :])  # (..., M, K, N)
    y = np.zeros(a2.shape[:-2] + (a2.shape[-1],), np.int8)
    for idx in np.ndindex(y.shape):
        *batch, i, j = idx
        acc = 0
        for k in range(a2.shape[-2]):
            acc += ((int(a2[(*batch, i, k, j)]) - p["a_zero_point"])
                    * (int(b2[(*batch, i, k, j)]) - p["b_zero_point"]))
        y[idx] = requant(acc, p["multiplier"], p["shift"], p["y_zero_point"], p["qmin"], p["qmax"])
    return y


MATMUL_SHAPES = [((4, 6), (6, 3)), ((2, 4, 5), (5, 3)), ((3, 1, 4, 5), (2, 5, 2)),
                 ((1, 3, 8), (2, 1, 8, 4))]


@pytest.mark.parametrize("zps", [(0, 0, 0), (-128, 127, 127), (127, -128, -128), (3, -7, 5)],
                         ids=str)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_matches_loops(shapes, zps):
    rng = np.random.default_rng([MATMUL_SHAPES.index(shapes), zps[0] & 255])
    a = rng.integers(-128, 128, shapes[0]).astype(np.int8)
    b = rng.integers(-128, 128, shapes[1]).astype(np.int8)
    K = shapes[0][-1]
    m, k = quantize_multiplier(F32(40 / (np.sqrt(K) * 5476)))
    p = dict(a_zero_point=zps[0], b_zero_point=zps[1], y_zero_point=zps[2],
             multiplier=int(m), shift=int(k), qmin=-128, qmax=127)
    y = matmul(a, b, **p)
    assert y.shape == np.matmul(a, b).shape
    np.testing.assert_array_equal(y, loop_matmul(a, b, p))
    clamped = matmul(a, b, **{**p, "qmin": -10, "qmax": 20})
    np.testing.assert_array_equal(clamped, np.clip(y, -10, 20))


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_accumulator_matches_onnx_reference_evaluator(shapes):
    rng = np.random.default_rng(50 + MATMUL_SHAPES.index(shapes))
    a = rng.integers(-128, 128, shapes[0]).astype(np.int8)
    b = rng.integers(-128, 128, shapes[1]).astype(np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["acc"])
    acc = ReferenceEvaluator(node).run(None, {"a": a, "b": b, "az": np.array(-3, np.int8),
                                              "bz": np.array(9, np.int8)})[0]
    m, k = quantize_multiplier(F32(0.0007))
    y = matmul(a, b, a_zero_point=-3, b_zero_point=9, y_zero_point=4, multiplier=int(m),
               shift=int(k))
    np.testing.assert_array_equal(y, requant(acc, m, k, 4))


@pytest.mark.parametrize("scales", ["random", "pow2"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8], ids=["int8", "uint8"])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES + [((3, 17, 200), (3, 200, 11))], ids=str)
def test_matmul_bit_exact_with_onnxruntime(shapes, dtype, scales):
    rng = np.random.default_rng([len(shapes[0]), shapes[0][-1], dtype == np.uint8,
                                 scales == "pow2"])
    a = rng.integers(-128, 128, shapes[0]).astype(np.int8)
    b = rng.integers(-128, 128, shapes[1]).astype(np.int8)
    za, zb, zy = (int(v) | 1 for v in rng.integers(-64, 64, 3))
    K = shapes[0][-1]
    if scales == "pow2":
        s_a, s_b = F32(2.0 ** -5), F32(2.0 ** -6)
        s_y = F32(2.0 ** round(np.log2(2.0 ** -11 * np.sqrt(K) * 5476 / 40)))
    else:
        s_a, s_b = F32(rng.uniform(0.01, 0.05)), F32(rng.uniform(0.01, 0.05))
        s_y = F32(s_a * s_b * np.sqrt(K) * 5476 / 40)
    y_ort = ort_qlinearmatmul(_to_unsigned(a, dtype), s_a, _to_unsigned(za, dtype),
                              _to_unsigned(b, dtype), s_b, _to_unsigned(zb, dtype), s_y,
                              _to_unsigned(zy, dtype), b_const=False)
    m, k = quantize_multiplier(F32(s_a * s_b) / s_y)
    y = matmul(a, b, a_zero_point=za, b_zero_point=zb, y_zero_point=zy, multiplier=int(m),
               shift=int(k))
    np.testing.assert_array_equal(y, _to_signed(y_ort))
    assert len(np.unique(y)) >= min(10, y.size // 4)


def test_dense_shape_error():
    x = np.zeros((2, 5), np.int8)
    with pytest.raises(ValueError):
        dense(x, w=np.zeros((4, 6), np.int8), bias=np.zeros(4, np.int32),
              multiplier=np.ones(4, np.int64), shift=np.zeros(4, np.int64),
              w_zero_point=np.zeros(4, np.int32), x_zero_point=0, y_zero_point=0, trans_w=1)


def test_dense_exact_where_onnxruntime_u8s8_saturates():
    """Activations at the top code against weights at 127: every adjacent pair of
    products is 2 * 255 * 127 > 2^15. Synapse's dense is the exact int64 result; onnxruntime
    agrees exactly where its u8s8 kernel does not saturate (AVX-512 VNNI), and nowhere
    else (AVX2: onnxruntime issue #14642)."""
    K, M = 64, 4
    x = np.full((3, K), 127, np.int8)
    w = np.full((K, M), 127, np.int8)
    s_x, s_w = F32(0.01), np.full(M, 0.01, F32)
    s_y = F32(0.01 * 0.01 * K * 255 * 127 / 100)  # the exact accumulator lands near 100
    m, k = quantize_multiplier((s_x * s_w) / s_y)
    p = dict(w=w, bias=np.zeros(M, np.int32), multiplier=m, shift=k,
             w_zero_point=np.zeros(M, np.int32), x_zero_point=-128, y_zero_point=0, trans_w=0,
             qmin=-128, qmax=127)
    y = dense(x, **p)
    np.testing.assert_array_equal(y, loop_dense(x, p))
    assert 95 <= y.min() <= y.max() <= 105
    u8 = np.uint8
    y_ort = _to_signed(ort_qlinearmatmul(_to_unsigned(x, u8), s_x, _to_unsigned(-128, u8), w,
                                         s_w[0], np.int8(0), s_y, _to_unsigned(0, u8), True))
    assert np.array_equal(y_ort, y) == ort_u8s8_exact()
