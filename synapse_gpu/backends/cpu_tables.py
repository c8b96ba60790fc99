"""Elementwise ops as lookup tables over the whole int8 domain: exact by construction.

add and mul see one pair of int8 values per output element (65536 possible
pairs); requantize one int8 value (256); batchnorm and prelu one value and its
channel (256 per channel). Each table is the reference op evaluated on EVERY
possible input, once per session, so a lookup returns the reference's bits for
any input at all: no rule is re-implemented here. Indexing uses x + 128, i.e.
the int8 bits viewed as uint8 with the sign bit flipped.
"""
from __future__ import annotations

import numpy as np

from .. import registry

TABLE_OPS = {"add", "mul", "requantize", "batchnorm", "prelu"}
_DOMAIN = np.arange(-128, 128, dtype=np.int16).astype(np.int8)


def _offset(x):
    """x + 128 as uint8 (the table row of each int8 value)."""
    return np.bitwise_xor(np.asarray(x, np.int8).view(np.uint8), np.uint8(0x80))


def prepare(node, buffers):
    ref = registry.reference_op(node.op)
    if node.op in ("add", "mul"):
        table = registry.call(ref, node, [_DOMAIN[:, None], _DOMAIN[None, :]], buffers).reshape(-1)

        def binary(a, b):
            # uint16 indices: a quarter of intp's memory traffic (measured 1.5x faster)
            idx = np.left_shift(_offset(a), 8, dtype=np.uint16)
            idx = idx | _offset(b)  # broadcasts like the op itself
            return table[idx]
        return binary
    if node.op == "requantize":
        table = registry.call(ref, node, [_DOMAIN], buffers)
        return lambda x: table.take(_offset(x))
    # batchnorm, prelu: per channel (axis 1); rows of C * 256
    C = len(buffers[node.params["multiplier"]])
    grid = np.ascontiguousarray(np.broadcast_to(_DOMAIN[:, None], (256, C)))
    table = np.ascontiguousarray(registry.call(ref, node, [grid], buffers).T).reshape(-1)

    def per_channel(x):
        rows = (np.arange(C, dtype=np.intp) * 256).reshape((1, C) + (1,) * (x.ndim - 2))
        return table.take(rows + _offset(x))
    return per_channel
