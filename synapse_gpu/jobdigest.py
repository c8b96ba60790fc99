"""Job digests: one hash over every record of a job, as a Merkle tree in record-id order.

Byte layout (docs/SPEC.md, "Job digest"); all hashes sha256, integers little-endian:
    record digest d_i  the run digest of record i alone (digest.record_digests)
    leaf(d)            = H(b"\\x00" + d)
    node(l, r)         = H(b"\\x01" + l + r)
    MTH(d_0)           = leaf(d_0)
    MTH(d_0..d_n-1)    = node(MTH(d_0..d_k-1), MTH(d_k..d_n-1)), k the largest power of two < n
    job digest         = H(b"synapse-job-v1\\0" + model id (32 raw bytes) + uint64 n + MTH)
This is RFC 6962's tree (Certificate Transparency): the 0x00/0x01 prefixes keep a
leaf from passing for a node, and the power-of-two split never duplicates a leaf.
The split also makes every aligned block of 2^j records a subtree, so workers that
own such blocks (shards) hash their own records, and the driver combines the shard
roots with the same rule (combine()): the distributed root is the single-process root.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from .digest import record_digests
from .errors import InputError


def _h(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def _split(n):
    """The largest power of two below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def combine(hashes):
    """MTH over already-hashed subtrees (leaf hashes, or roots of aligned shards)."""
    if not hashes:
        raise InputError("a job needs at least one record")
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return _h(b"\x01", combine(hashes[:k]), combine(hashes[k:]))


def merkle_root(record_digests):
    """MTH over a sequence of 32-byte record digests, in record-id order."""
    return combine([_h(b"\x00", bytes(d)) for d in record_digests])


def job_digest(model_id_hex, n, root):
    """The job digest (hex) from the model id, the record count and the tree root."""
    return _h(b"synapse-job-v1\0", bytes.fromhex(model_id_hex),
              int(n).to_bytes(8, "little"), root).hex()


def job_digest_of(model_id_hex, inputs, outputs):
    """The job digest of a single-process run (inputs/outputs as for digest.run_digest,
    every record at once): what a distributed run of the same job must reproduce."""
    d = record_digests(model_id_hex, inputs, outputs)
    return job_digest(model_id_hex, len(d), merkle_root(d))


def check_shard_size(shard_size):
    if shard_size < 1 or shard_size & (shard_size - 1):
        raise InputError(f"shard size {shard_size}: must be a power of two (a shard is then "
                         "a subtree of the job's Merkle tree)")


class JobDigestBuilder:
    """Collects (record id, digest) pairs in any order, from any worker; the root is
    taken in record-id order. A missing or repeated record id is an error, never a
    silently different digest."""

    def __init__(self, model_id_hex, n):
        if n < 1:
            raise InputError("a job needs at least one record")
        self.model_id, self.n = model_id_hex, n
        self._digests = np.zeros((n, 32), np.uint8)
        self._seen = np.zeros(n, bool)

    def add(self, ids, digests):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        d = np.array([np.frombuffer(bytes.fromhex(x) if isinstance(x, str) else bytes(x),
                                    np.uint8) for x in digests]).reshape(len(ids), 32)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise InputError(f"record ids must lie in [0, {self.n}); got {ids.min()}..{ids.max()}")
        if len(np.unique(ids)) != len(ids) or self._seen[ids].any():
            raise InputError("a record id arrived twice: each record must be counted once")
        self._seen[ids] = True
        self._digests[ids] = d

    def finish(self):
        missing = np.flatnonzero(~self._seen)
        if missing.size:
            raise InputError(f"{missing.size} records never arrived (first ids {missing[:5].tolist()})")
        return job_digest(self.model_id, self.n, merkle_root(self._digests))


class Tree:
    """Node hashes of the tree over one list of record digests, for descend()."""

    def __init__(self, record_digests):
        self._d = [bytes(d) for d in record_digests]
        self.n = len(self._d)
        self.node = lru_cache(maxsize=None)(self._node)

    def _node(self, lo, hi):
        if hi - lo == 1:
            return _h(b"\x00", self._d[lo])
        k = lo + _split(hi - lo)
        return _h(b"\x01", self.node(lo, k), self.node(k, hi))


def descend(n, node_a, node_b):
    """Record ids whose digests differ between two jobs of n records.

    node_a/node_b(lo, hi) give the subtree hash of records [lo, hi) on each side (a
    Tree's .node, or a query to a remote party): only subtrees that differ are opened,
    so d differing records cost O(d log n) node hashes, not n.
    """
    out, todo = [], [(0, n)]
    while todo:
        lo, hi = todo.pop()
        if node_a(lo, hi) == node_b(lo, hi):
            continue
        if hi - lo == 1:
            out.append(lo)
        else:
            k = lo + _split(hi - lo)
            todo += [(k, hi), (lo, k)]
    return out
