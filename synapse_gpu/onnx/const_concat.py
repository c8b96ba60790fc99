"""Concat with constant operands broadcast over the batch (a ViT's class token).

A DequantizeLinear'd int8 constant (QDQ Concat) or a constant QLinearConcat input, per
tensor, with axis 0 of size 1, is quantized into the concat's output scale once, at
import, with onnxruntime's float32 steps (DequantizeLinear, then QuantizeLinear:
rhe(f32(f32(s (q - z)) / s_y)) + z_y, clamped; QLinearConcat's table is the same), and
becomes a `constant` node of those codes (repeated per sample) feeding the concat with
the output's own scale: its rows are the file's bit for bit. The activations keep the
concat rule (docs/ops_rules.md). A constant that varies along the batch, a float
constant, or a per-axis quantized one is refused. A mixin of importer._Importer, ahead
of Int8Ops.
"""
from __future__ import annotations

import numpy as np

from .. import build
from ..errors import UnsupportedOpError
from ..reference import boundary
from .checks import label
from .values import Const, Deq, Int, Pending, QConst, describe


class ConstConcatOps:
    def _Concat(self, node):
        vs = [self._in(node, i) for i in range(len(node.input))]
        x = next((v for v in vs if isinstance(v, Deq)), None)
        if x is None or not any(isinstance(v, (Const, QConst)) for v in vs):
            return super()._Concat(node)
        for v in vs:
            if not isinstance(v, Deq):
                self._check_concat_constant(node, v, x.t)
        axis = int(self._attrs(node)["axis"])

        def emit(ys, yz, qmin, qmax):
            ts = [self._deq_t(v) if isinstance(v, Deq) else
                  self._concat_constant(node, v, x.t, ys, yz) for v in vs]
            y = build.concat(self.b, ts, axis, y_scale=ys, y_zero_point=yz, name=label(node))
            return self._clip(y, qmin, qmax, node)
        return Pending(node, emit)

    def _check_concat_constant(self, node, v, x):
        if not isinstance(v, QConst) or v.scale.ndim or v.q.dtype != np.int8 or \
                v.q.ndim != len(self.b.shapes[x]):
            self._fail(node, f"a concat operand is {describe(v)}; a constant operand must be an "
                             "int8 tensor quantized per tensor, of the activations' rank, with "
                             "axis 0 of size 1", exc=UnsupportedOpError)
        if v.q.shape[0] != 1:
            self._fail(node, f"a constant operand of shape {list(v.q.shape)} varies along axis "
                             "0, the batch", exc=UnsupportedOpError)

    def _concat_constant(self, node, v, x, ys, yz):
        """A `constant` node (batch from tensor x) of v's codes in the output's (ys, yz)."""
        codes = boundary.quantize(v.real(), ys, yz)
        return self.b.add_node("constant", [x], params=dict(value=codes[0]),
                               name=f"{label(node)}.constant", out_quant=(float(ys), int(yz)))

    def _qlinear_concat_input(self, node, i, x, ys, yz):
        """QLinearConcat input i as a tensor with its quantization; a constant one becomes
        a `constant` node in the output's (ys, yz) (x: an activation input, for the batch)."""
        if not isinstance(self._in(node, i), Const) or x is None:
            return self._qin(node, i)
        q = self._qconst_input(node, i, f"constant input {i}")  # qoperator.py
        self._check_concat_constant(node, q, x)
        return self._concat_constant(node, q, x, ys, yz)

    def _int_inputs(self, node, first, step):
        """The tensor of the first Int among inputs first, first + step, ... (or None)."""
        ins = [self._in(node, i) for i in range(first, len(node.input), step)]
        return next((v.t for v in ins if isinstance(v, Int)), None)
