"""Token models: an int64 graph input of token ids, read by Gather on a constant table.

Gather(DequantizeLinear(int8 table), ids) (quantize_static's QDQ form) becomes one
`embedding` node (reference/embedding.py): the output is exact rows of the int8
table, with the table's scale and zero point, so the DequantizeLinear commutes with
the Gather and no arithmetic is needed. QOperator's Gather on the raw int8/uint8 codes
takes the scale its QLinear reader states. The ids are a graph input of dtype "int64",
carried as their int32 bytes (N, S..., 4) and range-checked per run by the session.
Anything else that reads the ids is refused: Synapse computes on int8 tensors only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from ..errors import OnnxImportError, UnsupportedOpError
from ..reference.embedding import ID_BYTES
from .checks import label
from .values import Const, Deq, Int, QConst, describe, int8_codes, int8_onnx_type

ID_TYPES = (TensorProto.INT64, TensorProto.INT32)


@dataclass
class Tokens:
    """A graph input of token ids; t is its packed int8 tensor (N, S..., 4)."""

    t: str
    shape: tuple  # the ids' shape, batch first


class TokenOps:
    def _token_input(self, name, shape, uses):
        for n, k in uses:
            if n.op_type != "Gather" or k != 1:
                raise OnnxImportError(
                    f"token-id graph input {name!r} is read by node {label(n)!r} (op "
                    f"{n.op_type}); Synapse takes integer inputs only as the indices of a Gather "
                    "on a constant embedding table")
        t = self.b.add_input(name, (*shape, ID_BYTES), 1.0, 0, dtype="int64")
        return Tokens(t, shape)

    def _Gather(self, node, v=None):
        ids = self._in(node, 1)
        if not isinstance(ids, Tokens):
            return super()._Gather(node, v)
        if int(self._attrs(node).get("axis", 0)) != 0:
            self._fail(node, "gathers token ids along an axis other than 0 of the table",
                       exc=UnsupportedOpError)
        table = self._in(node, 0)
        if isinstance(table, Const) and table.value.dtype.kind == "f":
            self._fail(node, "a float embedding table has no int8 form",
                       "quantize the model (quantize_static quantizes Gather's table)",
                       UnsupportedOpError)
        if isinstance(table, Const):
            return self._raw_table(node, ids, table.value)
        if not (isinstance(table, QConst) and table.q.dtype == np.int8 and table.q.ndim == 2
                and not table.scale.ndim):
            got = (f"{table.q.dtype} {list(table.q.shape)} with {table.scale.size} scale(s)"
                   if isinstance(table, QConst) else describe(table))
            self._fail(node, f"the table must be a 2-D int8 constant quantized per tensor, got {got}",
                       exc=UnsupportedOpError)
        s, z = float(table.scale), int(table.zp)
        y = self.b.add_node("embedding", [ids.t], params=dict(table=table.q), name=label(node),
                            out_quant=(s, z))
        return Deq(y, s, z)

    def _raw_table(self, node, ids, q):
        """QOperator: Gather reads the int8/uint8 codes; the QLinear op that reads the output
        states their scale and zero point (as for an int8 graph input)."""
        onnx_type = int8_onnx_type(q)
        if onnx_type is None or q.ndim != 2:
            self._fail(node, f"the table must be a 2-D int8/uint8 constant, got {q.dtype} "
                             f"{list(q.shape)}", exc=UnsupportedOpError)
        s, z = self._int_input_params(node.output[0], onnx_type, self.consumers)
        y = self.b.add_node("embedding", [ids.t], params=dict(table=int8_codes(node, q, "table")),
                            name=label(node), out_quant=(s, z))
        return Int(y, onnx_type)
