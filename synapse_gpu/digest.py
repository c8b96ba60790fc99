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

import numpy as np


def _record(name, a):
    a = np.ascontiguousarray(a, dtype=np.int8)
    return name.encode() + b"\0" + np.array([a.ndim, *a.shape], dtype="<i8").tobytes() + a.tobytes()


def run_digest(model_id_hex, inputs, outputs):
    """inputs/outputs: ordered lists of (name, int8 array)."""
    h = hashlib.sha256(b"synapse-run-v1\0")
    h.update(bytes.fromhex(model_id_hex))
    for name, a in list(inputs) + list(outputs):
        h.update(_record(name, a))
    return h.hexdigest()


def record_digests(model_id_hex, inputs, outputs):
    """One run digest per record (row i of every tensor): equal to run_digest over the
    batch-1 slices [i:i+1], so a record's digest never depends on the batch it ran in.

    inputs/outputs: ordered lists of (name, int8 array), axis 0 the record. Returns a
    list of 32-byte raw digests.
    """
    tensors = [(n, np.ascontiguousarray(a, dtype=np.int8)) for n, a in list(inputs) + list(outputs)]
    heads = [n.encode() + b"\0" + np.array([a.ndim, 1, *a.shape[1:]], dtype="<i8").tobytes()
             for n, a in tensors]
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
