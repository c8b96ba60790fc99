"""``take``: select elements along each per-sample axis by constant index lists.

    y[n, o_1, ..., o_k] = x[n, idx_1[o_1], ..., idx_k[o_k]]

``indices`` (int32) is the concatenation of idx_1, ..., idx_k, one list per axis
after the batch, of lengths ``sizes`` (the per-sample output shape); every entry
is in [0, that axis's input size). No arithmetic on the values: the output keeps
the input's scale and zero point, and the batch axis is untouched, so samples
never mix. One op for the importer's data movement: Slice (any steps), Split,
Gather with constant indices, Tile, Expand, Resize nearest (the indices computed
at import from ONNX's coordinate rules).
"""
import numpy as np


def take(x, *, indices, sizes):
    """y = x indexed independently along axes 1..k by the lists in ``indices``."""
    x = np.asarray(x, dtype=np.int8)
    idx = np.asarray(indices, dtype=np.int64)
    y, start = x, 0
    for axis, size in enumerate(sizes, start=1):
        y = np.take(y, idx[start:start + size], axis=axis)
        start += size
    return y


def take_shape_error(x_shape, indices, sizes):
    """None if (indices, sizes) fit an input of x_shape, else what is wrong."""
    sizes = [int(s) for s in sizes]
    if len(sizes) != len(x_shape) - 1 or min(sizes, default=1) < 1:
        return (f"sizes {sizes} must give one positive size per axis after the batch of "
                f"{list(x_shape)}")
    if indices.shape != (sum(sizes),):
        return f"indices has shape {list(indices.shape)}, expected [{sum(sizes)}] (sum of sizes)"
    start = 0
    for d, size in zip(x_shape[1:], sizes):
        part = indices[start:start + size]
        if part.min() < 0 or part.max() >= d:
            return f"indices {int(part.min())}..{int(part.max())} outside an axis of size {d}"
        start += size
    return None
