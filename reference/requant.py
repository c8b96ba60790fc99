"""Requantization: int32 accumulator -> int8, integers only.

The rule (docs/SPEC.md, "Requantization") is an integer emulation of the float32
requantization of ONNX Runtime's x86 CPU kernels (MLAS):
    y = clamp(rint_half_even(f32(f32(acc) * M)) + z_y, qmin, qmax)
with the real multiplier M = m * 2^-k stored as integers (m < 2^24, k any int).
    1. a = acc rounded to 24 significant bits, ties to even   (= f32(acc))
    2. p = a * m rounded to 24 significant bits, ties to even (= the f32 product)
    3. y = round_half_even(p * 2^-k) + z_y, clamped to [qmin, qmax].
Magnitudes: |acc| <= 2^31, so |a| <= 2^31 and |a * m| < 2^55: int64 holds every
intermediate. A float32 product below 2^-126 (subnormal) rounds to 0 either way,
so the emulation is exact for every float32 M, tiny and huge.
"""
import numpy as np

INT8_MIN = -128
INT8_MAX = 127
# Beyond this magnitude any result saturates int8 whatever the zero point; caps the
# left shift of a huge multiplier (k < 0) so int64 never overflows.
_SATURATED = 1 << 40


def quantize_multiplier(real):
    """Split float32 multiplier(s) M >= 0 exactly into (m, k): M == m * 2^-k.

    m is an integer below 2^24 (the float32 significand), k = 24 - exponent.
    M = 0 gives (0, 0). Returns int64 arrays shaped like ``real``.
    """
    M = np.asarray(real, dtype=np.float32)
    if not np.all(np.isfinite(M)) or np.any(M < 0):
        raise ValueError(f"multiplier must be finite and >= 0, got {M}")
    frac, exp = np.frexp(M.astype(np.float64))  # float32 -> float64 is exact
    m = np.ldexp(frac, 24).astype(np.int64)  # exact: at most 24 significant bits
    k = np.where(m == 0, 0, 24 - exp).astype(np.int64)
    return m, k


def multiplier_value(m, k):
    """The float32 M that (m, k) represent (inverse of quantize_multiplier)."""
    return np.float32(np.ldexp(np.float64(m), -int(k)))


def bit_length(v):
    """Number of significant bits of each int64 v >= 0 (0 for 0)."""
    v = np.asarray(v, dtype=np.int64)
    _, e = np.frexp(v.astype(np.float64))
    e = e.astype(np.int64)
    # float64 may round v up to the next power of two: correct by one bit then.
    too_big = (e > 0) & ((v >> np.maximum(e - 1, 0)) == 0)
    return e - too_big


def round_shift(v, s):
    """round_half_even(v / 2^s) for int64 v and shift s >= 0 (elementwise).

    Exact for any int64 v with s <= 62; a larger s acts as 62, still exact (0)
    for |v| < 2^61.
    """
    v = np.asarray(v, dtype=np.int64)
    s = np.minimum(np.asarray(s, dtype=np.int64), 62)
    a = np.abs(v)
    s1 = np.maximum(s, 1)
    q = a >> s1
    r = a - (q << s1)
    half = np.int64(1) << (s1 - 1)
    q = q + ((r > half) | ((r == half) & ((q & 1) == 1)))
    q = np.where(s > 0, q, a)
    return np.where(v < 0, -q, q)


def round_to_24_bits(v):
    """Round int64 v (|v| < 2^61) to 24 significant bits, ties to even: f32(v)."""
    v = np.asarray(v, dtype=np.int64)
    s = np.maximum(bit_length(np.abs(v)) - 24, 0)
    return round_shift(v, s) << s if v.ndim == 0 else np.where(
        s > 0, round_shift(v, s) << s, v)


def scale_by_pow2(p, k):
    """round_half_even(p * 2^-k) for int64 p, any integer k; saturates for k < 0."""
    p = np.asarray(p, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    down = round_shift(p, np.maximum(k, 0))
    # k < 0: a left shift; any |p| >= 1 shifted by 9 or more already exceeds the
    # int8 range for every zero point, so cap the shift and the magnitude.
    up_mag = np.minimum(np.abs(p), _SATURATED) << np.minimum(np.maximum(-k, 0), 9)
    up = np.where(p < 0, -up_mag, up_mag)
    return np.where(k >= 0, down, up)


def requant(acc, multiplier, shift, zero_point, qmin=INT8_MIN, qmax=INT8_MAX):
    """int32 accumulator(s) -> int8 by the rule in this module's docstring.

    ``multiplier``/``shift`` broadcast against ``acc`` (per-channel arrays must be
    reshaped by the caller); ``zero_point``, ``qmin``, ``qmax`` likewise.
    """
    acc = np.asarray(acc, dtype=np.int64)
    a = round_to_24_bits(acc)
    p = round_to_24_bits(a * np.asarray(multiplier, dtype=np.int64))
    y = scale_by_pow2(p, shift) + np.asarray(zero_point, dtype=np.int64)
    return np.clip(y, qmin, qmax).astype(np.int8)


def round_shift_zp(v, s, zero_point):
    """round_half_even(v * 2^-s + z) for int64 v, integer z and any integer shift s.

    z joins before the rounding: ties go to the even OUTPUT code (onnxruntime's
    QLinearAdd / QLinearMul / QLinearAveragePool round float(v * M + z_y)). Exact for
    |v| < 2^63 when s <= 62; a larger s acts as 62, exact (result z) for |v| < 2^61.
    s < 0 scales up and saturates like requant.
    """
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    z = np.asarray(zero_point, dtype=np.int64)
    t = np.clip(s, 1, 62)
    q = v >> t  # floor(v / 2^t)
    r = v - (q << t)  # in [0, 2^t)
    half = np.int64(1) << (t - 1)
    q = q + ((r > half) | ((r == half) & ((q + z) % 2 == 1)))
    return np.where(s > 0, q, scale_by_pow2(v, s)) + z


def requant_zp_inside(acc, multiplier, shift, zero_point, qmin=INT8_MIN, qmax=INT8_MAX):
    """requant with the zero point added before the last rounding:
        y = clamp(rhe(f32(f32(acc) * M) + z), qmin, qmax),  M = m * 2^-k
    steps 1 and 2 (the two 24-bit roundings) are requant's; |acc| <= 2^31.
    """
    a = round_to_24_bits(np.asarray(acc, dtype=np.int64))
    p = round_to_24_bits(a * np.asarray(multiplier, dtype=np.int64))
    return np.clip(round_shift_zp(p, shift, zero_point), qmin, qmax).astype(np.int8)
