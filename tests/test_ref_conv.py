"""reference/conv.py against independent computations, zero tolerance.

- plain loops over output and kernel positions written here (every configuration);
- the ONNX reference evaluator's ConvInteger for the integer accumulator;
- onnxruntime's QLinearConv, bit for bit (SPEC: the rule reproduces MLAS), over
  int8 and uint8 activations, per-tensor and per-channel weights, random and
  power-of-two scales, odd zero points.
"""
import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ort_helpers import ort_weight_range
from synapse_gpu.reference.conv import (conv, conv1d, conv2d, conv3d, conv_output_shape,
                                        resolve_pads)
from synapse_gpu.reference.requant import quantize_multiplier, requant

F32 = np.float32

# (id, batch, C, M, spatial, kernel, strides, pads, dilations, group)
SHAPES = [
    ("1d", 2, 3, 4, (11,), (3,), (1,), [1, 1], (1,), 1),
    ("1d-s2-d2-g2-same_upper", 2, 4, 4, (12,), (3,), (2,), "same_upper", (2,), 2),
    ("1d-depthwise-x2-same_lower", 1, 4, 8, (10,), (4,), (3,), "same_lower", (1,), 4),
    ("2d-3x3-p1", 2, 3, 5, (7, 6), (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 1),
    ("2d-2x3-s21-asym", 1, 4, 3, (8, 7), (2, 3), (2, 1), [0, 1, 2, 0], (1, 1), 1),
    ("2d-dil21", 1, 2, 3, (9, 9), (3, 3), (1, 1), [2, 1, 2, 1], (2, 1), 1),
    ("2d-group2", 2, 4, 6, (6, 5), (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 2),
    ("2d-depthwise-s2-same_upper", 1, 6, 6, (7, 8), (3, 3), (2, 2), "same_upper", (1, 1), 6),
    ("2d-1x1", 2, 8, 4, (5, 6), (1, 1), (1, 1), [0, 0, 0, 0], (1, 1), 1),
    ("2d-1x1-s2", 1, 8, 5, (7, 6), (1, 1), (2, 2), [0, 0, 0, 0], (1, 1), 1),
    ("2d-4x2-same_lower", 1, 3, 4, (7, 5), (4, 2), (1, 2), "same_lower", (1, 1), 1),
    ("2d-7x7-s2-p3", 1, 3, 4, (12, 11), (7, 7), (2, 2), [3, 3, 3, 3], (1, 1), 1),
    ("2d-long-reduction", 1, 64, 3, (4, 4), (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 1),
    ("3d", 1, 2, 3, (4, 5, 4), (2, 3, 2), (1, 1, 1), [1, 0, 1, 0, 1, 1], (1, 1, 1), 1),
    ("3d-s-d-g2-same_upper", 2, 4, 4, (5, 6, 5), (3, 2, 2), (2, 1, 2), "same_upper",
     (1, 2, 1), 2),
]

# (id, x_zero_point, y_zero_point, w_zero_point kind, qmin, qmax)
ZERO_POINTS = [
    ("zp0", 0, 0, "zero", -128, 127),
    ("x-128-y127", -128, 127, "zero", -128, 127),
    ("x127-y-128-wodd", 127, -128, "odd", -128, 127),
    ("x3-y-5-wmixed", 3, -5, "mixed", -128, 127),
    ("relu", -77, -20, "zero", -20, 127),
    ("relu6", 11, -20, "odd", -20, 60),
]


def make_case(rng, shape, zps, per_channel):
    _, N, C, M, spatial, kernel, strides, pads, dilations, group = shape
    _, zx, zy, wz_kind, qmin, qmax = zps
    x = rng.integers(-128, 128, (N, C) + spatial).astype(np.int8)
    w = rng.integers(-128, 128, (M, C // group) + kernel).astype(np.int8)
    wz = {"zero": np.zeros(M), "odd": np.full(M, -3), "mixed": rng.integers(-9, 10, M)}[wz_kind]
    # scales: the output spreads over the int8 range
    K = (C // group) * int(np.prod(kernel))
    s_x = F32(rng.uniform(0.01, 0.05))
    s_w = rng.uniform(0.002, 0.02, M).astype(F32) if per_channel else np.full(
        M, rng.uniform(0.002, 0.02), F32)
    acc_std = np.sqrt(K) * 74.0 * 74.0
    s_y = F32(s_x * float(s_w.mean()) * acc_std / 40)
    m, k = quantize_multiplier((s_x * s_w) / s_y)  # M = f32(f32(s_x * s_w) / s_y)
    params = dict(w=w, bias=rng.integers(-acc_std / 2, acc_std / 2, M).astype(np.int32),
                  multiplier=m, shift=k, w_zero_point=wz.astype(np.int32), x_zero_point=zx,
                  y_zero_point=zy, strides=list(strides), pads=pads, dilations=list(dilations),
                  group=group, qmin=qmin, qmax=qmax)
    return x, params


def onnx_same_pads(mode, spatial, kernel, strides, dilations):
    """ONNX auto_pad SAME_*: out = ceil(in / s), the odd unit at the end (UPPER) or start."""
    begins, ends = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        head = total // 2 if mode == "same_upper" else (total + 1) // 2
        begins.append(head)
        ends.append(total - head)
    return begins + ends


def loop_conv(x, p):
    """Direct loops: for each output and kernel position, read x (or the zero point
    outside the input) and accumulate (x - zx) @ (w - zw) over the group's channels."""
    w = p["w"].astype(np.int64)
    M, Cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    N, spatial = x.shape[0], x.shape[2:]
    nd, G = len(kernel), p["group"]
    Mg = M // G
    s, d = p["strides"], p["dilations"]
    pads = p["pads"]
    if isinstance(pads, str):
        pads = onnx_same_pads(pads, spatial, kernel, s, d)
    out = [(spatial[i] + pads[i] + pads[nd + i] - (kernel[i] - 1) * d[i] - 1) // s[i] + 1
           for i in range(nd)]
    xc = x.astype(np.int64) - p["x_zero_point"]
    wc = w - p["w_zero_point"].astype(np.int64).reshape((M,) + (1,) * (nd + 1))
    acc = np.zeros((N, M) + tuple(out), np.int64)
    for g in range(G):
        ms, cs = slice(g * Mg, (g + 1) * Mg), slice(g * Cg, (g + 1) * Cg)
        for o in itertools.product(*[range(v) for v in out]):
            for k in itertools.product(*[range(v) for v in kernel]):
                i = tuple(o[a] * s[a] + k[a] * d[a] - pads[a] for a in range(nd))
                if all(0 <= i[a] < spatial[a] for a in range(nd)):
                    xi = xc[(slice(None), cs) + i]  # (N, C/G)
                    acc[(slice(None), ms) + o] += xi @ wc[(ms, slice(None)) + k].T
    acc += p["bias"].astype(np.int64).reshape((M,) + (1,) * nd)
    per_channel = (M,) + (1,) * nd
    return requant(acc, p["multiplier"].reshape(per_channel), p["shift"].reshape(per_channel),
                   p["y_zero_point"], p["qmin"], p["qmax"])


CONV_BY_RANK = {1: conv1d, 2: conv2d, 3: conv3d}


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("zps", ZERO_POINTS, ids=[z[0] for z in ZERO_POINTS])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_conv_matches_loops(shape, zps, per_channel):
    rng = np.random.default_rng([SHAPES.index(shape), ZERO_POINTS.index(zps), per_channel])
    x, p = make_case(rng, shape, zps, per_channel)
    y = CONV_BY_RANK[len(shape[4])](x, **p)
    expected = loop_conv(x, p)
    assert y.dtype == np.int8 and y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)
    # the data exercises the rule: distinct outputs, not all saturated
    assert len(np.unique(y)) >= min(8, y.size // 16)


@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_conv_accumulator_matches_onnx_reference_evaluator(shape):
    """ONNX's ConvInteger gives acc = sum (x - zx)(w - zw); then bias + requant."""
    rng = np.random.default_rng(100 + SHAPES.index(shape))
    x, p = make_case(rng, shape, ZERO_POINTS[3], True)
    p["w_zero_point"] = np.full_like(p["w_zero_point"], -5)  # the evaluator takes one value
    nd = x.ndim - 2
    attrs = dict(kernel_shape=list(p["w"].shape[2:]), strides=p["strides"],
                 dilations=p["dilations"], group=p["group"])
    if isinstance(p["pads"], str):
        attrs["auto_pad"] = p["pads"].upper()
    else:
        attrs["pads"] = p["pads"]
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["acc"], **attrs)
    acc = ReferenceEvaluator(node).run(None, {
        "x": x, "w": p["w"], "xz": np.array(p["x_zero_point"], np.int8),
        "wz": np.array(-5, np.int8)})[0].astype(np.int64)
    acc += p["bias"].astype(np.int64).reshape((-1,) + (1,) * nd)
    per_channel = (-1,) + (1,) * nd
    expected = requant(acc, p["multiplier"].reshape(per_channel),
                       p["shift"].reshape(per_channel), p["y_zero_point"], p["qmin"], p["qmax"])
    np.testing.assert_array_equal(conv(x, **p), expected)


def ort_qlinearconv(x, s_x, zx, w, s_w, wz, s_y, zy, bias, per_channel, attrs):
    dt = x.dtype
    et = TensorProto.UINT8 if dt == np.uint8 else TensorProto.INT8
    inits = [numpy_helper.from_array(np.array(s_x, F32), "xs"),
             numpy_helper.from_array(np.array(zx, dt), "xz"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(s_w if per_channel else np.array(s_w[0], F32), "ws"),
             numpy_helper.from_array(wz if per_channel else np.array(wz[0], np.int8), "wz"),
             numpy_helper.from_array(np.array(s_y, F32), "ys"),
             numpy_helper.from_array(np.array(zy, dt), "yz"), numpy_helper.from_array(bias, "b")]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                            ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", et, x.shape)],
                              [helper.make_tensor_value_info("y", et, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


ORT_SHAPES = [s for s in SHAPES if s[0] in (
    "1d", "1d-s2-d2-g2-same_upper", "2d-3x3-p1", "2d-2x3-s21-asym", "2d-dil21", "2d-group2",
    "2d-depthwise-s2-same_upper", "2d-1x1-s2", "2d-4x2-same_lower", "2d-7x7-s2-p3",
    "2d-long-reduction", "3d")]


@pytest.mark.parametrize("scales", ["random", "pow2"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8], ids=["int8", "uint8"])
@pytest.mark.parametrize("shape", ORT_SHAPES, ids=[s[0] for s in ORT_SHAPES])
def test_conv_bit_exact_with_onnxruntime(shape, dtype, per_channel, scales):
    rng = np.random.default_rng([ORT_SHAPES.index(shape), dtype == np.uint8, per_channel,
                                 scales == "pow2"])
    _, N, C, M, spatial, kernel, strides, pads, dilations, group = shape
    K = (C // group) * int(np.prod(kernel))
    w = rng.integers(*ort_weight_range(dtype), (M, C // group) + kernel).astype(np.int8)
    zx, zy = int(rng.integers(-64, 64)) | 1, int(rng.integers(-64, 64)) | 1  # odd
    wz = np.zeros(M, np.int8)
    x = rng.integers(-128, 128, (N, C) + spatial).astype(np.int8)
    if scales == "pow2":  # products of powers of two: exact ties are frequent
        s_x = F32(2.0 ** -int(rng.integers(4, 8)))
        s_w = (2.0 ** -rng.integers(5, 9, M if per_channel else 1)).astype(F32)
        s_y = F32(2.0 ** round(np.log2(float(s_x) * float(s_w.mean()) * np.sqrt(K) * 5476 / 40)))
    else:
        s_x = F32(rng.uniform(0.01, 0.05))
        s_w = rng.uniform(0.002, 0.02, M if per_channel else 1).astype(F32)
        s_y = F32(s_x * float(s_w.mean()) * np.sqrt(K) * 5476 / 40)
    s_w = np.broadcast_to(s_w, (M,)).astype(F32)
    bias = rng.integers(-50000, 50000, M).astype(np.int32)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                 group=group)
    if isinstance(pads, str) and max(dilations) == 1:
        attrs["auto_pad"] = pads.upper()
    else:  # onnxruntime refuses auto_pad with dilations: give it ONNX's SAME pads
        attrs["pads"] = (onnx_same_pads(pads, spatial, kernel, strides, dilations)
                         if isinstance(pads, str) else pads)
    # uint8 tensors are the same reals as int8 ones with values and zero points - 128
    off = 128 if dtype == np.uint8 else 0
    xo = (x.astype(np.int16) + off).astype(dtype)
    y_ort = ort_qlinearconv(xo, s_x, zx + off, w, s_w, wz, s_y, zy + off, bias, per_channel,
                            attrs)
    m, k = quantize_multiplier((s_x * s_w) / s_y)
    y = conv(x, w=w, bias=bias, multiplier=m, shift=k, w_zero_point=wz.astype(np.int32),
             x_zero_point=zx, y_zero_point=zy, strides=list(strides), pads=pads,
             dilations=list(dilations), group=group)
    np.testing.assert_array_equal(y, (y_ort.astype(np.int16) - off).astype(np.int8))
    assert len(np.unique(y)) >= min(10, y.size // 8)


def test_resolve_pads_same():
    # in 7, k 3, s 2: out 4, total pad 2 -> 1 + 1; in 8: out 4, total 1 -> at the end (upper)
    assert resolve_pads("same_upper", (7, 8), (3, 3), (2, 2), (1, 1)) == [1, 0, 1, 1]
    assert resolve_pads("same_lower", (7, 8), (3, 3), (2, 2), (1, 1)) == [1, 1, 1, 0]
    # dilation 2 makes the 3-kernel span 5: total 4 at stride 1
    assert resolve_pads("same_upper", (6,), (3,), (1,), (2,)) == [2, 2]
    assert resolve_pads([1, 2, 3, 4], (5, 5), (3, 3), (1, 1), (1, 1)) == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        resolve_pads("valid", (5,), (3,), (1,), (1,))
    with pytest.raises(ValueError):
        resolve_pads([1, 1], (5, 5), (3, 3), (1, 1), (1, 1))


def test_conv_output_shape():
    assert conv_output_shape((224, 224), (7, 7), (2, 2), [3, 3, 3, 3], (1, 1)) == (112, 112)
    assert conv_output_shape((7, 8), (3, 3), (2, 2), "same_upper", (1, 1)) == (4, 4)
    assert conv_output_shape((9,), (3,), (1,), [0, 0], (4,)) == (1,)
    with pytest.raises(ValueError):
        conv_output_shape((4,), (3,), (1,), [0, 0], (2,))


def test_conv_rank_and_shape_errors():
    rng = np.random.default_rng(7)
    x, p = make_case(rng, SHAPES[3], ZERO_POINTS[0], False)
    with pytest.raises(ValueError):
        conv1d(x, **p)
    with pytest.raises(ValueError):
        conv3d(x, **p)
    with pytest.raises(ValueError):
        conv2d(x[:, :2], **p)  # 2 input channels for a 3-channel weight
