"""Elementwise ops: requantize, batchnorm, relu, clip, prelu, add, mul, identity.

Activations are int8 with per-tensor zero points; per-channel params run along
axis 1 (N, C, ...). The reference computes in int64; each docstring gives the
bound that lets a kernel use int32 for the accumulator. |x - z_x| <= 255 for any
int8 x and zero point z_x in [-128, 127].

Two final roundings, each chosen to reproduce the ONNX Runtime kernel of the op:
- ``requant`` (requant.py): round half to even, THEN add z_y, as MLAS's
  requantization (conv, gemm) does. Used where ONNX Runtime has no integer
  kernel to follow (requantize, batchnorm, prelu).
- ``requant_zp_inside`` (requant.py): add z_y, THEN round half to even, i.e. a tie goes to the
  even OUTPUT code, as QLinearAdd / QLinearMul / QLinearAveragePool round
  float(v * M + z_y). The two differ only at exact ties with an odd z_y, but
  those are common (M = 1/2, power-of-two scales).
"""
import numpy as np

from .requant import INT8_MAX, INT8_MIN, requant, requant_zp_inside, round_shift_zp


def _i64(v):
    return np.asarray(v, dtype=np.int64)


def _per_channel(v, ndim):
    """A (C,) param reshaped to broadcast along axis 1 of a rank-``ndim`` tensor."""
    return _i64(v).reshape((1, -1) + (1,) * (ndim - 2))


def requantize(x, *, x_zero_point, y_zero_point, multiplier, shift,
               qmin=INT8_MIN, qmax=INT8_MAX):
    """y = requant(x - z_x; multiplier, shift, z_y), M = f32(s_x / s_y).

    Bound: |x - z_x| <= 255, far inside int32.
    """
    return requant(_i64(x) - x_zero_point, multiplier, shift, y_zero_point, qmin, qmax)


def batchnorm(x, *, scale, bias, multiplier, shift, x_zero_point, y_zero_point,
              qmin=INT8_MIN, qmax=INT8_MAX):
    """Per channel c (axis 1): acc = (x - z_x) * scale[c] + bias[c]; y = requant_c(acc).

    scale is int8 (symmetric), bias int32 in units of s_x * s_scale[c],
    M_c = f32(f32(s_x * s_scale[c]) / s_y).
    Bound: |acc| <= 255 * |scale[c]| + |bias[c]| <= 32640 + |bias[c]|, which must be
    < 2^31 (checked at load).
    """
    x = _i64(x)
    acc = (x - x_zero_point) * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)
    return requant(acc, _per_channel(multiplier, x.ndim), _per_channel(shift, x.ndim),
                   y_zero_point, qmin, qmax)


def relu(x, *, x_zero_point):
    """y = max(x, z_x): real 0 is the code z_x, and the output keeps the input's scale
    and zero point. No arithmetic, no bound."""
    return np.maximum(np.asarray(x, dtype=np.int8), np.int8(x_zero_point))


def clip(x, *, qmin=INT8_MIN, qmax=INT8_MAX):
    """y = clamp(x, qmin, qmax); the bounds are the real min/max already quantized
    with the tensor's own scale and zero point. No arithmetic, no bound."""
    return np.clip(np.asarray(x, dtype=np.int8), qmin, qmax).astype(np.int8)


def prelu(x, *, slope, multiplier, shift, x_zero_point, y_zero_point,
          pos_multiplier, pos_shift, qmin=INT8_MIN, qmax=INT8_MAX):
    """d = x - z_x; per channel c (axis 1):
        d >= 0: y = requant(d; pos_multiplier, pos_shift, z_y),        M = f32(s_x / s_y)
        d <  0: y = requant(d * slope[c]; multiplier[c], shift[c], z_y),
                M_c = f32(f32(s_x * s_slope[c]) / s_y)
    slope is int8, symmetric (its zero point is 0). d = 0 gives z_y on both branches.
    Bound: |d * slope[c]| <= 255 * 128 = 32640.
    """
    x = _i64(x)
    d = x - x_zero_point
    pos = requant(d, pos_multiplier, pos_shift, y_zero_point, qmin, qmax)
    neg = requant(d * _per_channel(slope, x.ndim), _per_channel(multiplier, x.ndim),
                  _per_channel(shift, x.ndim), y_zero_point, qmin, qmax)
    return np.where(d >= 0, pos, neg)


def add(a, b, *, a_zero_point, b_zero_point, y_zero_point, a_multiplier, b_multiplier,
        shift, qmin=INT8_MIN, qmax=INT8_MAX):
    """y = clamp(rhe(((a - z_a) * A + (b - z_b) * B) / 2^K + z_y), qmin, qmax), numpy
    broadcasting, with (A, B, K) = add_multipliers(f32(s_a / s_y), f32(s_b / s_y)).

    One rounding, half to even on the output code (round_shift_zp), of the exact
    value (a - z_a) M_a + (b - z_b) M_b + z_y; add_multipliers's docstring names its
    only approximation. K < 0 (multipliers of 2^23 and more) saturates.
    Bound: |d| <= 255 < 2^8 and A, B < 2^54, so each product is < 2^62 and the sum
    < 2^63: int64 holds it exactly (the kernel needs int64 here, not int32).
    """
    v = (_i64(a) - a_zero_point) * np.int64(a_multiplier) + \
        (_i64(b) - b_zero_point) * np.int64(b_multiplier)
    return np.clip(round_shift_zp(v, shift, y_zero_point), qmin, qmax).astype(np.int8)


def mul(a, b, *, a_zero_point, b_zero_point, y_zero_point, multiplier, shift,
        qmin=INT8_MIN, qmax=INT8_MAX):
    """y = requant_zp_inside((a - z_a) * (b - z_b); multiplier, shift, z_y), numpy
    broadcasting, M = f32(f32(s_a * s_b) / s_y): clamp(rhe(f32(d_a d_b M) + z_y)).

    Bound: |(a - z_a)(b - z_b)| <= 255^2 = 65025 < 2^24 (exact in float32, so the
    first 24-bit rounding never acts).
    """
    return requant_zp_inside((_i64(a) - a_zero_point) * (_i64(b) - b_zero_point),
                             multiplier, shift, y_zero_point, qmin, qmax)


def identity(x):
    """y = x (a copy). No arithmetic."""
    return np.array(x, dtype=np.int8, copy=True)
