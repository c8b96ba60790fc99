"""Quantized constant operands of Add and Mul as activations: what a transformer needs.

A DequantizeLinear'd int8 constant, per tensor, of any shape that broadcasts over the
batch (a positional embedding (S, D), a bias along the last axis (D,) after a MatMul,
GELU's scalar 1 and 0.5) becomes a `constant` node (its int8 codes repeated per sample,
reference/embedding.py); the op is then the two-activation rule: `add` (onnxruntime's
QLinearAdd, bit for bit) or `mul` (QLinearMul). A float constant keeps qdq.py's
per-channel batchnorm rule.
"""
from __future__ import annotations

import numpy as np

from .values import Deq, QConst, constant_node, per_channel


class AttentionOps:
    def _const_tensors(self, node, vs):
        x = next((u for u in vs if isinstance(u, Deq)), None)
        return vs if x is None else [self._const_tensor(node, v, x) for v in vs]

    def _const_tensor(self, node, v, x):
        if not isinstance(v, QConst) or v.scale.ndim or v.q.dtype != np.int8:
            return v
        rank = len(self.b.shapes[x.t])
        if v.q.ndim > rank:
            return v  # qdq.py's rule names the problem
        if per_channel(v.q.shape, rank):
            return v  # qdq.py's batchnorm rule
        return Deq(constant_node(self, node, x.t, v.q, v.scale, v.zp), float(v.scale), int(v.zp))
