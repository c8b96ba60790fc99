"""Run digests: one sha256 that pins a model, its inputs and its outputs.

Byte layout (docs/SPEC.md, "Run digest"), all integers little-endian:
    b"synapse-run-v1\\0"
    model id: 32 raw bytes (the sha256 of the model content)
    for each graph input, then each graph output, in the graph's declared order:
        name utf-8, b"\\0", int64 rank, int64 dims, the int8 values in C order
The digest is over int8 tensors only: the float boundary is the user's business.
A node trace entry is sha256 over the same tensor record of one node output.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np


def _head(name_bytes, shape):
    """A tensor record's bytes before its values: name, b"\\0", int64 rank and dims."""
    return name_bytes + struct.pack(f"<{len(shape) + 1}q", len(shape), *shape)


def _record(name, a):
    a = np.ascontiguousarray(a, dtype=np.int8)
    return _head(name.encode() + b"\0", a.shape) + a.tobytes()


class RunDigest:
    """run_digest for one model and fixed tensor names: the model's prefix is hashed and
    the names encoded once, so a call costs one hash copy and two updates per tensor."""

    def __init__(self, model_id_hex, names):
        self.base = hashlib.sha256(b"synapse-run-v1\0")
        self.base.update(bytes.fromhex(model_id_hex))
        self.names = [n.encode() + b"\0" for n in names]

    def __call__(self, arrays):
        """arrays: the int8 arrays in the order of `names`."""
        h = self.base.copy()
        for name, a in zip(self.names, arrays, strict=True):
            a = np.ascontiguousarray(a, dtype=np.int8)
            h.update(_head(name, a.shape))
            h.update(a)  # the buffer itself: no copy to bytes
        return h.hexdigest()


def run_digest(model_id_hex, inputs, outputs):
    """inputs/outputs: ordered lists of (name, int8 array)."""
    pairs = list(inputs) + list(outputs)
    return RunDigest(model_id_hex, [n for n, _ in pairs])([a for _, a in pairs])


def record_digests(model_id_hex, inputs, outputs):
    """One run digest per record (row i of every tensor): equal to run_digest over the
    batch-1 slices [i:i+1], so a record's digest never depends on the batch it ran in.

    inputs/outputs: ordered lists of (name, int8 array), axis 0 the record. Returns a
    list of 32-byte raw digests.
    """
    tensors = [(n, np.ascontiguousarray(a, dtype=np.int8)) for n, a in list(inputs) + list(outputs)]
    heads = [_head(n.encode() + b"\0", (1, *a.shape[1:])) for n, a in tensors]
    base = hashlib.sha256(b"synapse-run-v1\0")
    base.update(bytes.fromhex(model_id_hex))
    out = []
    for i in range(len(tensors[0][1])):
        h = base.copy()
        for head, (_, a) in zip(heads, tensors):
            h.update(head)
            h.update(a[i].tobytes())
        out.append(h.digest())
    return out


def tensor_digest(name, a):
    return hashlib.sha256(_record(name, a)).hexdigest()
