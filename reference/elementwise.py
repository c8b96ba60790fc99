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
  even OUTPUT code, as QLinearMul / QLinearAveragePool round float(v * M + z_y). The
  two differ only at exact ties with an odd z_y, but those are common (M = 1/2,
  power-of-two scales).
add is neither: it emulates QLinearAdd's float32 fused multiply-adds exactly (its
docstring).
"""
from fractions import Fraction

import numpy as np

from .requant import (INT8_MAX, INT8_MIN, quantize_multiplier, requant, requant_zp_inside,
                      round_shift, round_to_24_bits)


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


def add(a, b, *, a_zero_point, b_zero_point, y_zero_point, code_offset, a_multiplier,
        b_multiplier, fixed, shift, a_first, qmin=INT8_MIN, qmax=INT8_MAX):
    """onnxruntime's QLinearAdd (MLAS, x86 AVX2 with FMA), emulated exactly in integers.

    MLAS computes, in float32 on the stored codes (uint8 codes, not shifted):
        F = f32(z_y - fma(R_A, z_a, f32(R_B * z_b))),   R_A = f32(s_a / s_y), R_B likewise
        y = cvt_rne(fma(a, R_A, fma(b, R_B, F)))        then saturate to the code range;
    where `a` is broadcast along the innermost axis it swaps the operands (A's span is
    scalar: fma(b, R_B, fma(a, R_A, F')), F' with the roles swapped). add_params
    computes R_A, R_B and F (host, once) and writes them exactly as integers over one
    power of two: R_A = A / 2^K, R_B = B / 2^K, F = fixed / 2^K. With raw codes
    ra = a + code_offset, rb = b + code_offset (code_offset 128 for uint8 models), and
    (p, P) = (ra, A), (q, Q) = (rb, B) if a_first else the other way round:
        t = round_to_24_bits(p * P + fixed)      (the inner fma: one rounding to float32)
        u = round_to_24_bits(q * Q + t)          (the outer fma)
        y = rhe(u / 2^K), or -2^31 outside int32 (cvtps2dq's "integer indefinite")
        out = clamp(y - code_offset, qmin, qmax)
    Why this is the float computation, bit for bit: every float32 here is a dyadic
    number m 2^-k (m < 2^24); K is at least each k (add_params), so p * P + fixed is
    the exact real value of p * R + F scaled by 2^K, an integer. An fma rounds the
    exact value once to 24 significant bits, ties to even: round_to_24_bits does the
    same on the scaled integer (scaling by 2^K does not move the significant bits).
    No float32 here is subnormal or overflows (|values| <= 2^9 * 2^9), so those
    roundings are all there is; cvtps2dq rounds half to even like round_shift.
    Bounds: |p|, |q| <= 255 < 2^8; add_params keeps P, Q < 2^51 and |fixed| < 2^59, so
    |p P + fixed| < 2^60, |t| <= 2^60, |q Q + t| < 2^61: int64, inside
    round_to_24_bits's domain. (A ratio over 2^27 times smaller than the largest
    term, or K capped at 62, rounds that term to K bits: add_params's only
    approximation, at ratios no quantizer writes.)
    """
    ra = _i64(a) + code_offset
    rb = _i64(b) + code_offset
    (p, P), (q, Q) = ((ra, a_multiplier), (rb, b_multiplier)) if a_first else \
        ((rb, b_multiplier), (ra, a_multiplier))
    t = round_to_24_bits(p * np.int64(P) + np.int64(fixed))
    u = round_to_24_bits(q * np.int64(Q) + t)
    y = round_shift(u, shift)
    y = np.where((y >= 2 ** 31) | (y < -2 ** 31), -2 ** 31, y)
    return np.clip(y - code_offset, qmin, qmax).astype(np.int8)


def _f32_exact(q):
    """A rational rounded once to float32 (ties to even), for add_params's host math."""
    q = Fraction(q)
    if q == 0:
        return 0.0
    sign, q = (-1 if q < 0 else 1), abs(q)
    e = q.numerator.bit_length() - q.denominator.bit_length()
    e += (q >= Fraction(2) ** (e + 1)) - (q < Fraction(2) ** e)
    scaled = q / Fraction(2) ** (e - 23)  # in [2^23, 2^24)
    m, r = divmod(scaled.numerator, scaled.denominator)
    m += 2 * r > scaled.denominator or (2 * r == scaled.denominator and m % 2 == 1)
    return float(sign * m * Fraction(2) ** (e - 23))


def _fma(x, y, z):
    return _f32_exact(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))


def add_params(s_a, z_a, s_b, z_b, s_y, z_y, code_offset=0, a_first=0):
    """add's integer attributes for scales s_* and int8 zero points z_*; code_offset 128
    for a uint8 model, a_first 1 where a is broadcast along the innermost axis (add's
    docstring). Host-only, once per node; the float32 steps are MLAS's, computed exactly."""
    f32 = np.float32
    r_a, r_b = f32(f32(s_a) / f32(s_y)), f32(f32(s_b) / f32(s_y))
    za, zb, zy = (int(z) + code_offset for z in (z_a, z_b, z_y))
    (r1, z1), (r2, z2) = ((r_b, zb), (r_a, za)) if a_first else ((r_a, za), (r_b, zb))
    fixed = _f32_exact(zy - Fraction(_fma(r1, z1, _f32_exact(Fraction(float(r2)) * z2))))
    (ma, ka), (mb, kb), (mf, kf) = (tuple(int(v) for v in quantize_multiplier(abs(f32(x))))
                                    for x in (r_a, r_b, fixed))
    ks = [k for m, k in ((ma, ka), (mb, kb)) if m] or [0]
    K = max(ks + ([kf] if mf else []) + [0])
    K = min(K, min(ks) + 27, 62, kf + 35 if mf else 62)

    def at_K(m, k):
        return m << (K - k) if K >= k else int(round_shift(np.int64(m), k - K))
    return dict(code_offset=int(code_offset), a_multiplier=at_K(ma, ka),
                b_multiplier=at_K(mb, kb), fixed=at_K(mf, kf) * (-1 if fixed < 0 else 1),
                shift=K, a_first=int(a_first))


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
