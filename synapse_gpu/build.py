"""Op helpers that take float scales and emit integer nodes (the builder API).

    b = GraphBuilder()
    x = b.add_input("x", (-1, 3, 32, 32), scale=0.02, zero_point=0)
    y = build.conv(b, x, w_int8, w_scale, bias_int32, y_scale=0.05, y_zero_point=-10,
                   pads="same_upper", relu=True)
    b.add_output(y); graph = b.build()

Every multiplier is computed here once, in float32 in the order SEMANTICS.md
fixes, and stored as integers; backends never see a float.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import OverflowRiskError
from .reference import tables
from .reference.conv import resolve_pads
from .reference.elementwise import add_params
from .reference.requant import quantize_multiplier
from .reference.softmax import softmax_params

f32 = np.float32


def _qm(M):
    m, k = quantize_multiplier(M)
    return m.astype(np.int64), k.astype(np.int64)


def _scalar_qm(M):
    m, k = quantize_multiplier(M)
    return int(m), int(k)


def _clamp(zp, relu):
    return (max(-128, int(zp)) if relu else -128), 127


def _channels(v, n, dtype):
    a = np.asarray(v, dtype=dtype)
    return np.full(n, a, dtype=dtype) if a.ndim == 0 else a.reshape(n)


def quantize_weights(w, per_channel=True, axis=0):
    """Symmetric int8 weights: (w_q, scale) with scale = max|w| / 127 per channel."""
    w = np.asarray(w, dtype=np.float32)
    red = tuple(i for i in range(w.ndim) if i != axis) if per_channel else None
    amax = np.max(np.abs(w), axis=red, keepdims=True) if per_channel else np.max(np.abs(w))
    scale = np.where(amax > 0, amax / f32(127), f32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.reshape(-1) if per_channel else f32(scale)


def quantize_bias(bias, s_x, s_w):
    """int32 bias with scale s_x * s_w (as onnxruntime's quantizer stores it)."""
    s = f32(s_x) * np.asarray(s_w, dtype=np.float32)
    return np.rint(np.asarray(bias, dtype=np.float64) / s).astype(np.int64).clip(
        -(2**31 - 1), 2**31 - 1).astype(np.int32)


def conv(b, x, w, w_scale, bias=None, *, y_scale, y_zero_point, w_zero_point=0, strides=None,
         pads=None, dilations=None, group=1, relu=False, qmin=None, qmax=None, name=None):
    """Conv1D/2D/3D by weight rank; w int8 (M, C/group, *k), bias int32 (M) or None."""
    w = np.asarray(w, dtype=np.int8)
    M, nd = w.shape[0], w.ndim - 2
    s_x, zx = b.quant[x]
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = resolve_pads([0] * (2 * nd) if pads is None else pads, b.shapes[x][2:], w.shape[2:],
                        strides, dilations)
    s_w = _channels(w_scale, M, np.float32)
    m, k = _qm((f32(s_x) * s_w) / f32(y_scale))
    lo, hi = _clamp(y_zero_point, relu)
    return b.add_node(
        f"conv{nd}d", [x],
        attrs=dict(x_zero_point=zx, y_zero_point=int(y_zero_point), strides=strides, pads=pads,
                   dilations=dilations, group=int(group), qmin=lo if qmin is None else qmin,
                   qmax=hi if qmax is None else qmax),
        params=dict(w=w, bias=_channels(0 if bias is None else bias, M, np.int32), multiplier=m,
                    shift=k, w_zero_point=_channels(w_zero_point, M, np.int32)),
        name=name, out_quant=(y_scale, y_zero_point))


def dense(b, x, w, w_scale, bias=None, *, y_scale, y_zero_point, w_zero_point=0, trans_w=True,
          relu=False, name=None, alpha=None):
    """Fully connected over the last axis; w (M, K) if trans_w else (K, M).

    alpha (Gemm/QGemm) enters the multiplier as f32(f32(f32(alpha*s_x)*s_w)/s_y).
    """
    w = np.asarray(w, dtype=np.int8)
    M = w.shape[0] if trans_w else w.shape[1]
    s_x, zx = b.quant[x]
    s_w = _channels(w_scale, M, np.float32)
    sx = f32(s_x) if alpha is None else f32(alpha) * f32(s_x)
    m, k = _qm((sx * s_w) / f32(y_scale))
    lo, hi = _clamp(y_zero_point, relu)
    return b.add_node(
        "dense", [x],
        attrs=dict(x_zero_point=zx, y_zero_point=int(y_zero_point), trans_w=int(bool(trans_w)),
                   qmin=lo, qmax=hi),
        params=dict(w=w, bias=_channels(0 if bias is None else bias, M, np.int32), multiplier=m,
                    shift=k, w_zero_point=_channels(w_zero_point, M, np.int32)),
        name=name, out_quant=(y_scale, y_zero_point))


def matmul(b, a, c, *, y_scale, y_zero_point, name=None):
    (s_a, za), (s_c, zc) = b.quant[a], b.quant[c]
    m, k = _scalar_qm((f32(s_a) * f32(s_c)) / f32(y_scale))
    return b.add_node("matmul", [a, c], attrs=dict(
        a_zero_point=za, b_zero_point=zc, y_zero_point=int(y_zero_point), multiplier=m, shift=k),
        name=name, out_quant=(y_scale, y_zero_point))


def requantize(b, x, *, y_scale, y_zero_point, name=None):
    s_x, zx = b.quant[x]
    m, k = _scalar_qm(f32(s_x) / f32(y_scale))
    return b.add_node("requantize", [x], attrs=dict(
        x_zero_point=zx, y_zero_point=int(y_zero_point), multiplier=m, shift=k),
        name=name, out_quant=(y_scale, y_zero_point))


def batchnorm(b, x, gamma, beta, mean, var, eps=1e-5, *, y_scale, y_zero_point, relu=False,
              name=None):
    """Standalone BatchNorm: y = g*x + o with g = gamma/sqrt(var+eps), o = beta - mean*g.

    g is stored as int8 with a symmetric per-channel scale s_g[c] = |g[c]|/127 (the
    per-channel multiplier carries the precision); the offset as int32 bias with
    scale s_x*s_g[c]; M_c = f32(f32(s_x*s_g[c])/s_y).
    """
    s_x, zx = b.quant[x]
    g = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    off = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * g
    g_q, s_g = quantize_weights(g.astype(np.float32).reshape(-1), per_channel=True)
    m, k = _qm((f32(s_x) * s_g) / f32(y_scale))
    lo, hi = _clamp(y_zero_point, relu)
    return b.add_node("batchnorm", [x], attrs=dict(
        x_zero_point=zx, y_zero_point=int(y_zero_point), qmin=lo, qmax=hi),
        params=dict(scale=g_q, bias=quantize_bias(off.reshape(-1), s_x, s_g), multiplier=m, shift=k),
        name=name, out_quant=(y_scale, y_zero_point))


def relu(b, x, name=None):
    return b.add_node("relu", [x], attrs=dict(x_zero_point=b.quant[x][1]), name=name,
                      out_quant=b.quant[x])


def clip(b, x, lo, hi, name=None):
    """Clip to real bounds [lo, hi] (ReLU6: 0, 6), quantized on x's scale."""
    s, z = b.quant[x]
    q = lambda v: int(np.clip(np.rint(f32(v) / f32(s)) + z, -128, 127))  # noqa: E731
    return b.add_node("clip", [x], attrs=dict(qmin=-128 if lo is None else q(lo),
                                              qmax=127 if hi is None else q(hi)),
                      name=name, out_quant=(s, z))


def prelu(b, x, slope, *, y_scale, y_zero_point, name=None):
    """PReLU with a per-channel float slope stored as int8 with a symmetric per-channel
    scale s_s[c] = |slope[c]|/127; negative side M_c = f32(f32(s_x*s_s[c])/s_y)."""
    s_x, zx = b.quant[x]
    C = b.shapes[x][1]
    sl = np.broadcast_to(np.asarray(slope, np.float32).reshape(-1), (C,))
    q, s_s = quantize_weights(sl, per_channel=True)
    m, k = _qm((f32(s_x) * s_s) / f32(y_scale))
    pm, pk = _scalar_qm(f32(s_x) / f32(y_scale))
    return b.add_node("prelu", [x], attrs=dict(
        x_zero_point=zx, y_zero_point=int(y_zero_point), pos_multiplier=pm, pos_shift=pk),
        params=dict(slope=q, multiplier=m, shift=k), name=name, out_quant=(y_scale, y_zero_point))


def lut(b, x, table, fn, *, y_scale, y_zero_point, name=None):
    return b.add_node("lut", [x], attrs=dict(fn=fn), params=dict(table=np.asarray(table, np.int8)),
                      name=name, out_quant=(y_scale, y_zero_point))


def unary(b, x, fn, *, y_scale, y_zero_point, alpha=None, beta=None, name=None):
    """Sigmoid, tanh, leaky_relu (alpha), hard_sigmoid (alpha, beta) as a 256-entry table
    computed here, once, from the scales (reference/tables.py)."""
    s_x, zx = b.quant[x]
    q = (s_x, zx, y_scale, y_zero_point)
    table = {"sigmoid": lambda: tables.sigmoid_table(*q), "tanh": lambda: tables.tanh_table(*q),
             "leaky_relu": lambda: tables.leaky_relu_table(alpha, *q),
             "hard_sigmoid": lambda: tables.hard_sigmoid_table(alpha, beta, *q)}[fn]()
    return lut(b, x, table, fn, y_scale=y_scale, y_zero_point=y_zero_point, name=name)


def softmax(b, x, axis=-1, *, y_scale=1 / 256, y_zero_point=-128, name=None):
    """Integer softmax (reference/softmax.py); the default output quantization is
    onnxruntime's for int8 softmax (scale 1/256, zero point -128)."""
    p = softmax_params(b.quant[x][0], y_scale, y_zero_point)
    table = p.pop("exp_table")
    return b.add_node("softmax", [x], attrs=dict(axis=int(axis) % len(b.shapes[x]), **p),
                      params=dict(exp_table=table), name=name, out_quant=(y_scale, y_zero_point))


def _a_broadcast_innermost(a_shape, b_shape):
    """Whether a is broadcast (size 1) along the innermost axis of the output where b is
    not: onnxruntime's QLinearAdd then swaps its operands (reference add's docstring).
    The batch axis counts as larger than 1, so the answer never depends on the batch."""
    rank = max(len(a_shape), len(b_shape))
    a = [1] * (rank - len(a_shape)) + [abs(d) for d in a_shape]
    c = [1] * (rank - len(b_shape)) + [abs(d) for d in b_shape]
    for da, dc in zip(reversed(a), reversed(c)):
        if max(da, dc) > 1:
            return da == 1
    return False


def add(b, a, c, *, y_scale, y_zero_point, relu=False, code_offset=0, name=None):
    """onnxruntime's QLinearAdd, bit for bit (reference/elementwise.py:add); code_offset
    128 where the ONNX model's codes were uint8 (the float steps see the raw codes)."""
    (s_a, za), (s_c, zc) = b.quant[a], b.quant[c]
    p = add_params(s_a, za, s_c, zc, y_scale, y_zero_point, code_offset,
                   int(_a_broadcast_innermost(b.shapes[a], b.shapes[c])))
    lo, hi = _clamp(y_zero_point, relu)
    return b.add_node("add", [a, c], attrs=dict(
        a_zero_point=za, b_zero_point=zc, y_zero_point=int(y_zero_point), **p, qmin=lo,
        qmax=hi), name=name, out_quant=(y_scale, y_zero_point))


def mul(b, a, c, *, y_scale, y_zero_point, name=None):
    (s_a, za), (s_c, zc) = b.quant[a], b.quant[c]
    m, k = _scalar_qm((f32(s_a) * f32(s_c)) / f32(y_scale))
    return b.add_node("mul", [a, c], attrs=dict(
        a_zero_point=za, b_zero_point=zc, y_zero_point=int(y_zero_point), multiplier=m, shift=k),
        name=name, out_quant=(y_scale, y_zero_point))


def _pool_attrs(b, x, kernel, strides, pads, dilations, ceil_mode):
    nd = len(kernel)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    return dict(kernel_shape=list(kernel), strides=strides, dilations=dilations,
                pads=resolve_pads([0] * (2 * nd) if pads is None else pads, b.shapes[x][2:], kernel,
                                  strides, dilations),
                ceil_mode=int(ceil_mode))


def max_pool(b, x, kernel, strides=None, pads=None, dilations=None, ceil_mode=0, name=None):
    return b.add_node("max_pool", [x], attrs=_pool_attrs(b, x, kernel, strides, pads, dilations,
                                                          ceil_mode), name=name, out_quant=b.quant[x])


def avg_pool(b, x, kernel, strides=None, pads=None, count_include_pad=0, ceil_mode=0, *,
             y_scale=None, y_zero_point=None, name=None):
    """Average pool; entry n of the multiplier table is f32(f32(s_x/s_y)/n)."""
    s_x, zx = b.quant[x]
    y_scale, y_zero_point = (s_x, zx) if y_scale is None else (y_scale, y_zero_point)
    V = math.prod(int(k) for k in kernel)
    if V > (2**31 - 1) // 255:  # refused before the (V + 1)-entry tables exist
        raise OverflowRiskError(f"avg_pool {name or x!r}: a window of {V} taps; the sum of "
                                "255 * V must stay inside int32 (reference/pool.py)")
    r = f32(s_x) / f32(y_scale)
    counts = np.arange(V + 1, dtype=np.float32)
    counts[0] = 1  # entry 0 is never used (a window always has a valid element)
    m, k = _qm(r / counts)
    attrs = _pool_attrs(b, x, kernel, strides, pads, None, ceil_mode)
    attrs.pop("dilations")
    attrs.update(count_include_pad=int(count_include_pad), x_zero_point=zx,
                 y_zero_point=int(y_zero_point))
    return b.add_node("avg_pool", [x], attrs=attrs, params=dict(multiplier=m, shift=k), name=name,
                      out_quant=(y_scale, y_zero_point))


def global_avg_pool(b, x, *, y_scale=None, y_zero_point=None, name=None):
    s_x, zx = b.quant[x]
    y_scale, y_zero_point = (s_x, zx) if y_scale is None else (y_scale, y_zero_point)
    n = int(np.prod(b.shapes[x][2:]))
    # onnxruntime's QLinearGlobalAveragePool order: bit-exact with it (docs/ops_rules.md)
    m, k = _scalar_qm(f32(s_x) / (f32(y_scale) * f32(n)))
    return b.add_node("global_avg_pool", [x], attrs=dict(
        x_zero_point=zx, y_zero_point=int(y_zero_point), multiplier=m, shift=k),
        name=name, out_quant=(y_scale, y_zero_point))


def flatten(b, x, name=None):
    return b.add_node("flatten", [x], attrs=dict(axis=1), name=name, out_quant=b.quant[x])


def reshape(b, x, shape, name=None):
    """shape: the per-sample target shape (the batch axis is kept)."""
    return b.add_node("reshape", [x], attrs=dict(shape=[b.shapes[x][0], *shape]), name=name,
                      out_quant=b.quant[x])


def transpose(b, x, perm, name=None):
    return b.add_node("transpose", [x], attrs=dict(perm=list(perm)), name=name, out_quant=b.quant[x])


def concat(b, xs, axis, *, y_scale, y_zero_point, name=None):
    ms, ks = zip(*[_scalar_qm(f32(b.quant[x][0]) / f32(y_scale)) for x in xs])
    return b.add_node("concat", list(xs), attrs=dict(
        axis=int(axis), x_zero_points=[b.quant[x][1] for x in xs], multipliers=list(ms),
        shifts=list(ks), y_zero_point=int(y_zero_point)), name=name, out_quant=(y_scale, y_zero_point))


def pad(b, x, pads, mode="constant", value=None, name=None):
    """pads over all axes [begins..., ends...] (batch entries 0); value is real (default 0)."""
    s, z = b.quant[x]
    q = z if value is None else int(np.clip(np.rint(f32(value) / f32(s)) + z, -128, 127))
    return b.add_node("pad", [x], attrs=dict(pads=list(pads), mode=mode, value=q), name=name,
                      out_quant=(s, z))
