"""``layernorm``: layer normalization over the trailing axes, integers only (I-BERT style).

ONNX LayerNormalization: y = (x - mean) / sqrt(var + eps) * gamma + beta, mean and var
over the axes from ``axis`` to the last (n elements per row; axis >= 1: never the batch).
The gains g and offsets b are (K, m) arrays, m = n or 1 (one value for the whole row):
row r (rows in C order over the leading axes, batch included) uses row r % K of them.
LayerNormalization has K = 1, m = n; InstanceNormalization over (N, C, *sp) rows of the
spatial axes has K = C, m = 1; GroupNormalization, viewed as (N, G, C/G, *sp), has
K = G and m = n (each element the gain of its channel).

Run (per row of n elements, integers only; d = x - z_x, |d| <= 255, n <= 4096):
    S1 = sum d,  S2 = sum d^2                       (exact: |S1| < 2^20, S2 < 2^28)
    c_i = n d_i - S1                                (= n (d_i - mean); |c_i| < 2^21)
    V  = n S2 - S1^2 + eps_term                     (= n^2 (var + eps) / s_x^2; int64)
    P  = max(0, (60 - bit_length(V)) // 2),  D = isqrt(V 4^P)     (D ~ 2^P sqrt(V), >= 2^29)
    z_i = rhe(c_i 2^(P+16) / D)                     (the normalized value in Q16, an exact
                                                      rational rounded half to even)
    y_i = clamp(rhe((z_i g_i + b_i) 2^-(16+shift)) + z_y, qmin, qmax)
s_x cancels: (x - mean)/sqrt(var + eps) = c_i / sqrt(V) exactly when eps_term is exact.
Bounds: |c_i| <= sqrt((n-1) (V - eps_term)) so |c_i 2^(P+16)| <= sqrt(n) D 2^16 < 2^53;
|z_i| < 2^22 and |g_i| < 2^24: |z_i g_i| < 2^46; |b_i| < 2^47.

Build (host, float64, ``layernorm_params``): eps_term = rhe(eps n^2 / s_x^2); G_i =
gamma_i / s_y, B_i = beta_i / s_y (gamma, beta: their float32 values); shift = the
largest k <= 22 with max|G| 2^k < 2^22 (max|G| < 2^22 required); g_i = rhe(G_i 2^shift);
b_i = rhe(B_i 2^(16+shift)) with B clipped to +-(64 max|G| + 256) (|z| < 64: a larger
offset saturates anyway; so |b_i| < 2^44 + 2^46); 0 <= eps_term < 2^50 (so V < 2^51).
"""
import math

import numpy as np

MAX_N = 4096
Q = 16  # fraction bits of the normalized value


def _rhe_div(num, den):
    """num / den rounded half to even, exactly (int64 arrays, den > 0)."""
    q, r = np.divmod(num, den)  # floor division: 0 <= r < den
    return q + ((2 * r > den) | ((2 * r == den) & (q % 2 == 1)))


def isqrt(v):
    """floor(sqrt(v)) for int64 v in [0, 2^62], exactly (float estimate, integer fix-up)."""
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r -= r * r > v
    r += (r + 1) * (r + 1) <= v
    return r


def layernorm(x, *, g, b, axis, eps_term, shift, x_zero_point, y_zero_point, qmin=-128,
              qmax=127):
    """y per the module docstring; normalizes axes axis.. of int8 x."""
    x = np.asarray(x, dtype=np.int8)
    axis = axis % x.ndim
    n = math.prod(x.shape[axis:])
    d = x.astype(np.int64).reshape(-1, n) - int(x_zero_point)
    s1 = d.sum(axis=1, keepdims=True)
    V = n * (d * d).sum(axis=1, keepdims=True) - s1 * s1 + int(eps_term)
    bits = np.floor(np.log2(np.maximum(V, 1).astype(np.float64))).astype(np.int64) + 1
    bits += V >= (np.int64(1) << bits)  # exact bit_length (the float log may be one short)
    bits -= (bits > 0) & (V < (np.int64(1) << np.maximum(bits - 1, 0)))
    P = np.maximum(0, (60 - bits) // 2)
    D = np.maximum(1, isqrt(V << (2 * P)))  # V = 0 only for a constant row and eps 0: c = 0
    z = _rhe_div((n * d - s1) << (P + Q), D)
    g, b = np.asarray(g, np.int64), np.asarray(b, np.int64)
    k = np.arange(d.shape[0]) % g.shape[0]  # each row's gain row
    y = _rhe_div(z * g[k] + b[k], np.int64(1) << (Q + int(shift))) + int(y_zero_point)
    return np.clip(y, qmin, qmax).astype(np.int8).reshape(x.shape)


def layernorm_params(gamma, beta, eps, s_x, s_y, n=None):
    """{"g", "b"} params (K, m) and {"eps_term", "shift"} attrs (module docstring).

    gamma, beta: (m,) for one row of n = m elements, or (K, m) with the row length n given.
    """
    gamma = np.atleast_2d(np.asarray(gamma, np.float32).astype(np.float64))
    beta = np.broadcast_to(np.asarray(beta, np.float32).astype(np.float64), gamma.shape)
    n = gamma.shape[1] if n is None else n
    if not 1 <= n <= MAX_N:
        raise ValueError(f"a LayerNormalization over {n} elements (1..{MAX_N})")
    s_x, s_y = float(np.float32(s_x)), float(np.float32(s_y))
    G, B = gamma / s_y, beta / s_y
    gmax = float(np.abs(G).max())
    shift = 22 if gmax == 0 else min(22, 22 - math.frexp(gmax)[1])
    if shift < 0:
        raise ValueError(f"gamma / s_y up to {gmax:.3g}: outside the integer rule (< 2^22)")
    lim = 64 * gmax + 256
    g = np.rint(G * 2.0 ** shift).astype(np.int64)
    b = np.rint(np.clip(B, -lim, lim) * 2.0 ** (Q + shift)).astype(np.int64)
    eps_term = int(np.rint(float(np.float32(eps)) * n * n / (s_x * s_x)))
    if not 0 <= eps_term < 1 << 50:
        raise ValueError(f"epsilon {eps} with input scale {s_x}: eps n^2 / s_x^2 >= 2^50")
    return {"g": g.astype(np.int32), "b": b}, {"eps_term": eps_term, "shift": int(shift)}
