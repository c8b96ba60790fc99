"""``lrn``: local response normalization across channels (ONNX LRN), integers only.

ONNX: y = x / (bias + alpha / size * sum_{c' in window(c)} x_c'^2) ^ beta, the window
along axis 1 being [c - floor((size-1)/2), c + ceil((size-1)/2)] inside [0, C).

Run (per element, integers only):
    d_c = x_c - z_x                       (|d| <= 255)
    S   = sum over the window of d_c'^2   (int32: S <= size * 65025 < 2^31, size <= 4096)
    r   = x + 128                         (the element's own code selects a table row)
    y   = clamp(start[r] + step[r] * #{j : thresholds[r, j] <= S}, qmin, qmax)
For a fixed code, the output is a monotone function of S alone (|y_real| shrinks as S
grows when beta > 0), so it moves one output step at each threshold: the rows hold
those thresholds, ascending (2^31 - 1 pads a row: never reached).

Build (host, once; ``lrn_params``): the exact output for code q and sum S is
    v   = s_x d (bias + alpha / size * s_x^2 * S) ^ (-beta)   in float64 (alpha, beta,
          bias their float32 values; s_x d and s_x^2 S exact there)
    y_q = clamp(rint_half_even(f32(f32(v) / s_y)) + z_y)      (QuantizeLinear)
and each threshold is the smallest integer S where y_q moves one more step from its
value at S = 0 (a binary search over S, exact: every candidate S is evaluated).
The table therefore reproduces this float64 rule for EVERY (code, S) pair; onnxruntime
computes the float32 formula, so an output can differ by one step where the float32
value lies within rounding noise of a .5 boundary (docs/ops_rules.md).
"""
import numpy as np

from .boundary import quantize

MAX_SIZE = 4096
NEVER = (1 << 31) - 1


def lrn(x, *, start, step, thresholds, size, x_zero_point, qmin=-128, qmax=127):
    """y per the module docstring; x is (N, C, ...) int8."""
    x = np.asarray(x, dtype=np.int8)
    d = x.astype(np.int64) - int(x_zero_point)
    sq = d * d
    C = x.shape[1]
    lo_off, hi_off = (size - 1) // 2, size - 1 - (size - 1) // 2
    S = np.zeros_like(sq)
    for off in range(-lo_off, hi_off + 1):  # ascending channel order
        lo, hi = max(0, -off), min(C, C - off)
        if lo < hi:
            S[:, lo:hi] += sq[:, lo + off:hi + off]
    r = x.astype(np.int64) + 128
    count = np.zeros_like(S)
    th = np.asarray(thresholds, dtype=np.int64)
    for code in np.unique(r):
        m = r == code
        count[m] = np.searchsorted(th[code], S[m], side="right")
    y = np.asarray(start, np.int64)[r] + np.asarray(step, np.int64)[r] * count
    return np.clip(y, qmin, qmax).astype(np.int8)


def lrn_codes(S, d, s_x, s_y, z_y, size, alpha, beta, bias):
    """The exact output code (unclamped to qmin/qmax) for integer sums S and offsets d."""
    a, b, k = (float(np.float32(v)) for v in (alpha, beta, bias))
    s_x = float(np.float32(s_x))
    with np.errstate(all="ignore"):
        base = k + a / size * (s_x * s_x) * np.asarray(S, np.float64)
        v = s_x * np.asarray(d, np.float64) * base ** (-b)
    if np.isnan(v).any():
        raise ValueError("bias + alpha/size * sum of squares must stay positive")
    return quantize(v.astype(np.float32), s_y, z_y).astype(np.int64)


def lrn_params(s_x, z_x, s_y, z_y, size, alpha=1e-4, beta=0.75, bias=1.0, channels=None):
    """{"start", "step", "thresholds"} for the lrn op (module docstring).

    channels: C, when known, bounds S by min(size, C) * 255^2 (shorter rows).
    """
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"LRN size {size} outside [1, {MAX_SIZE}]")
    d = np.arange(-128, 128, dtype=np.int64) - int(z_x)
    s_max = min(size, channels or size) * 255 * 255
    args = (s_x, s_y, z_y, size, alpha, beta, bias)
    c0 = lrn_codes(np.zeros_like(d), d, *args)
    c1 = lrn_codes(np.full_like(d, s_max), d, *args)
    step = np.sign(c1 - c0)
    n = np.abs(c1 - c0)
    width = max(int(n.max()), 1)
    rows, ks = np.nonzero(np.arange(1, width + 1)[None, :] <= n[:, None])
    lo = np.zeros(rows.size, np.int64)  # smallest S with |code(S) - code(0)| >= k + 1
    hi = np.full(rows.size, s_max, np.int64)
    while (lo < hi).any():
        mid = (lo + hi) // 2
        moved = np.abs(lrn_codes(mid, d[rows], *args) - c0[rows]) >= ks + 1
        hi = np.where(moved, mid, hi)
        lo = np.where(moved, lo, mid + 1)
    thresholds = np.full((256, width), NEVER, np.int64)
    thresholds[rows, ks] = lo
    return {"start": c0.astype(np.int8), "step": step.astype(np.int8),
            "thresholds": thresholds.astype(np.int32)}
