"""Constant operands of any shape for Add: what a transformer adds besides activations.

A quantized constant (DequantizeLinear of int8, per tensor) that is neither a scalar
nor one value per channel (axis 1), e.g. a positional embedding (S, D) or a bias
along the last axis (D,) after a MatMul, becomes a `constant` node (its int8 codes
repeated per sample, reference/embedding.py) and the Add is then the two-activation
`add`: onnxruntime's QLinearAdd, bit for bit. Scalars and per-channel constants keep
the existing batchnorm rule (qdq.py:_const_operand).
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from .checks import label
from .values import Deq, QConst


class AttentionOps:
    def _add(self, node, vs):
        return super()._add(node, [self._const_tensor(node, v, vs) for v in vs])

    def _const_tensor(self, node, v, vs):
        x = next((u for u in vs if isinstance(u, Deq)), None)
        if x is None or not isinstance(v, QConst) or v.scale.ndim or v.q.dtype != np.int8:
            return v
        rank = len(self.b.shapes[x.t])
        if v.q.ndim > rank:
            return v  # the existing rule names the problem
        full = (1,) * (rank - v.q.ndim) + v.q.shape
        if all(d == 1 for i, d in enumerate(full) if i != 1):
            return v  # a scalar or one value per channel: qdq.py's rule
        if full[0] != 1:
            self._fail(node, f"a constant operand of shape {list(v.q.shape)} varies along axis "
                             "0, the batch", exc=UnsupportedOpError)
        t = self.b.add_node("constant", [x.t], params=dict(value=v.q.reshape(full[1:])),
                            name=f"{label(node)}.constant", out_quant=(float(v.scale), int(v.zp)))
        return Deq(t, float(v.scale), int(v.zp))
