"""``resize_linear``: (multi)linear interpolation along the per-sample axes, integers only.

Each axis a after the batch has, per output position o, two input positions lo[o], hi[o]
and an integer weight w[o] in [0, 2^F_a] for hi (lo gets 2^F_a - w[o]); F_a =
frac_bits[a], 0 for an axis that is only copied (its lo factor is then 1, its hi 0):
    acc = sum over the 2^k corners of prod_a (weight of the corner's side on axis a)
          * (x[corner] - z_x)                       (exact int64: |acc| <= 255 * 2^sum F_a)
    y   = clamp(rhe(acc * m * 2^-(shift + sum F_a)) + z_y, qmin, qmax)   (M = m 2^-shift
          = f32(s_x / s_y); one exact rounding, zero point added after it)
k = rank - 1 <= 3 and sum F_a <= MAX_FRAC_BITS = 30, so |acc * m| < 2^8 2^30 2^24 = 2^62;
shift + sum F_a in [1, 62].
Build (host, the importer): ONNX Resize's coordinate transform in float32 (as
onnxruntime), clamped to [0, n - 1]; lo = floor, hi = min(lo + 1, n - 1),
w = rhe((x - lo) 2^F_a) with F_a = 30 // (number of resized axes) (15 bits for an image).
``indices`` (int32) holds, per axis, lo then hi; ``weights`` (int32) the w lists.
"""
import itertools

import numpy as np

MAX_FRAC_BITS = 30


def resize_linear(x, *, indices, weights, sizes, frac_bits, x_zero_point, y_zero_point,
                  multiplier, shift, qmin=-128, qmax=127):
    """y per the module docstring; x int8 (N, ...), sizes the per-sample output shape."""
    x = np.asarray(x, dtype=np.int8)
    idx, w = np.asarray(indices, np.int64), np.asarray(weights, np.int64)
    k = len(sizes)
    lists, start, wstart = [], 0, 0
    for size in sizes:
        lists.append((idx[start:start + size], idx[start + size:start + 2 * size],
                      w[wstart:wstart + size]))
        start, wstart = start + 2 * size, wstart + size
    d = x.astype(np.int64) - int(x_zero_point)
    acc = np.zeros((x.shape[0], *sizes), np.int64)
    for corner in itertools.product((0, 1), repeat=k):
        part, factor = d, np.ones(sizes, np.int64)
        for a, (side, (lo, hi, wa), f) in enumerate(zip(corner, lists, frac_bits)):
            part = np.take(part, hi if side else lo, axis=a + 1)
            shape = [1] * k
            shape[a] = -1
            factor = factor * (wa if side else (1 << int(f)) - wa).reshape(shape)
        acc += part * factor
    s = int(shift) + sum(int(f) for f in frac_bits)  # in [1, 62] (the op table checks it)
    v = acc * int(multiplier)
    q = v >> s
    r, half = v - (q << s), np.int64(1) << (s - 1)
    q = q + ((r > half) | ((r == half) & (q % 2 == 1)))
    return np.clip(q + int(y_zero_point), qmin, qmax).astype(np.int8)
