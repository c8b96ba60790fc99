"""Data movement: flatten, reshape, transpose, concat, pad.

No arithmetic except concat's rescale (requant). The batch axis 0 is never merged
or moved (the load-time validation rejects attrs that would), so sample i's output
depends on sample i only.
"""
import math

import numpy as np

from .requant import requant


def flatten(x, *, axis=1):
    """(d0, ..., dn) -> (d0 * ... * d(axis-1), d(axis) * ... * dn), ONNX Flatten."""
    x = np.asarray(x, dtype=np.int8)
    axis = axis % x.ndim
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def reshape(x, *, shape):
    """ONNX Reshape (allowzero = 0): shape[0] is -1 or 0, the batch is kept; elsewhere
    0 copies the input's dimension at that index and one -1 is inferred."""
    x = np.asarray(x, dtype=np.int8)
    target = [x.shape[i] if (d == 0 or i == 0) else int(d) for i, d in enumerate(shape)]
    return x.reshape(target)


def transpose(x, *, perm):
    """y = x with axes permuted, y.shape[i] = x.shape[perm[i]]; perm[0] == 0."""
    return np.transpose(np.asarray(x, dtype=np.int8), [int(p) for p in perm])


def concat(*xs, axis, x_zero_points, multipliers, shifts, y_zero_point):
    """y = concatenate_i(requant(x_i - z_i; multipliers[i], shifts[i], z_y)) on ``axis``,
    M_i = f32(s_i / s_y).

    An input with the output's scale and zero point is copied unchanged: M_i = 1 is
    m = 2^23, k = 23, and requant(d * 2^23 / 2^23) + z_y = x exactly.
    Bound: |x_i - z_i| <= 255.
    """
    parts = [requant(np.asarray(x, dtype=np.int64) - int(z), int(m), int(k), y_zero_point)
             for x, z, m, k in zip(xs, x_zero_points, multipliers, shifts, strict=True)]
    return np.concatenate(parts, axis=axis)


def pad(x, *, pads, mode="constant", value=0):
    """ONNX Pad; pads = (begin_0, ..., begin_r, end_0, ..., end_r), batch entries 0.

    constant: new positions hold ``value`` (an int8 code, usually the zero point);
    edge: they repeat the border element; reflect: they mirror the input about the
    border element, which itself is not repeated (needs pad < that axis's size).
    """
    x = np.asarray(x, dtype=np.int8)
    r = x.ndim
    widths = [(int(pads[i]), int(pads[r + i])) for i in range(r)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.int8(value))
    return np.pad(x, widths, mode={"edge": "edge", "reflect": "reflect"}[mode])
