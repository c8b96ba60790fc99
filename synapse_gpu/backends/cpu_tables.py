"""Elementwise ops as lookup tables over the whole int8 domain: exact by construction.

add and mul see one pair of int8 values per output element (65536 possible
pairs); requantize one int8 value (256); batchnorm and prelu one value and its
channel (256 per channel). Each table is the reference op evaluated on EVERY
possible input, once per session, so a lookup returns the reference's bits for
any input at all: no rule is re-implemented here. add, mul and requantize tables
are stored in the order of the raw bits (int8 viewed as uint8), so the index is the
bits themselves (two bytes joined for a pair); per-channel rows use x + 128, the
bits with the sign bit flipped.
"""
from __future__ import annotations

import numpy as np

from .. import registry

TABLE_OPS = {"add", "mul", "requantize", "batchnorm", "prelu"}
_DOMAIN = np.arange(-128, 128, dtype=np.int16).astype(np.int8)
_BITS = np.arange(256) ^ 0x80  # the _DOMAIN row of each raw bit pattern 0..255


def _offset(x):
    """x + 128 as uint8 (the table row of each int8 value)."""
    return np.bitwise_xor(np.asarray(x, np.int8).view(np.uint8), np.uint8(0x80))


_SPLIT_MIN = 1 << 18  # elements; below this a thread hand-off costs more than it saves
_pool = None


def _split(fn, a, b, out):
    """fn(a, b, out) over slices of axis 0 (of the flat arrays when they are contiguous)
    in this process's threads (numpy releases the GIL
    in the lookups); each output element is computed once, by the same rule."""
    global _pool
    from .cpu_ort import threads

    if out.size < _SPLIT_MIN or threads() < 2:
        return fn(a, b, out)
    if a.flags.c_contiguous and b.flags.c_contiguous:  # no broadcasting: split the flat arrays
        a, b, out = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    n = min(threads(), a.shape[0])
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(threads())
    cuts = np.linspace(0, a.shape[0], n + 1).astype(int)
    parts = [slice(cuts[i], cuts[i + 1]) for i in range(n)]
    for f in [_pool.submit(fn, a[s], b[s], out[s]) for s in parts]:
        f.result()


def domain_table(node, buffers):
    """The reference op on its whole input domain, rows in value order (row i: value
    i - 128): (256, 256) for add and mul (a by rows, b by columns), (256,) for
    requantize, (C, 256) for the per-channel ops."""
    ref = registry.reference_op(node.op)
    if node.op in ("add", "mul"):
        return registry.call(ref, node, [_DOMAIN[:, None], _DOMAIN[None, :]], buffers)
    if node.op == "requantize":
        return registry.call(ref, node, [_DOMAIN], buffers)
    C = len(buffers[node.params["multiplier"]])
    grid = np.ascontiguousarray(np.broadcast_to(_DOMAIN[:, None], (256, C)))
    return np.ascontiguousarray(registry.call(ref, node, [grid], buffers).T)


def prepare(node, buffers):
    table = domain_table(node, buffers)
    if node.op in ("add", "mul"):
        table = np.ascontiguousarray(table[_BITS][:, _BITS]).reshape(-1)  # raw-bit order

        def lookup(a, b, out):
            # uint16 index = (bits of a) * 256 + bits of b: a quarter of intp's memory traffic
            idx = np.left_shift(a.view(np.uint8), 8, dtype=np.uint16)
            idx |= b.view(np.uint8)
            np.take(table, idx, out=out)

        def binary(a, b):
            a, b = np.broadcast_arrays(np.asarray(a, np.int8), np.asarray(b, np.int8))
            out = np.empty(a.shape, np.int8)
            _split(lookup, a, b, out)
            return out
        return binary
    if node.op == "requantize":
        table = table[_BITS]  # raw-bit order
        return lambda x: table.take(np.asarray(x, np.int8).view(np.uint8))
    # batchnorm, prelu: per channel (axis 1); rows of C * 256
    C = len(table)
    table = table.reshape(-1)

    def per_channel(x):
        rows = (np.arange(C, dtype=np.intp) * 256).reshape((1, C) + (1,) * (x.ndim - 2))
        return table.take(rows + _offset(x))
    return per_channel
