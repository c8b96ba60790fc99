"""Reshapes and Transposes that move the batch axis, accepted where samples provably
never mix (docs/op_families.md, "Batch views").

Synapse keeps axis 0 as the batch. Two ONNX layouts leave it for a while and come back:

  Rows(R)   Reshape (N, *S) -> (N*R, *T) with R * prod(T) = prod(S) (onnxruntime's
            optimizer turns a MatMul over 3+ axes into Reshape -> Gemm -> Reshape).
            Row-major order puts sample n's elements in rows n*R .. n*R + R - 1, so
            Synapse holds (N, R, *T): the same bytes with the batch kept.
  Moved(j)  Transpose whose perm puts the batch at position j > 0 (a CRNN's
            (N, C, W) -> (W, N, C)). Synapse holds the batch-first order of the
            same axes: the ONNX tensor is the Synapse tensor with axis 0 moved to j.

Such an ONNX tensor (a "batch view") may only be read, as input 0, by a row-wise op:
its other inputs constant, and its output element depends only on the elements of
its own row (the last axis): Q/DequantizeLinear per tensor, Relu, Clip, the LUT
activations, Softmax/QLinearSoftmax with axis -1, and Gemm/MatMul/QGemm/QLinearMatMul
over the last axis with constant weights and a per-column bias. Each maps row r of
one sample to row r of the same sample, so the view carries over to its output. A
Reshape whose target splits the rows back into (N, ...) (Rows), or a Transpose that
brings the batch back to axis 0 (Moved), ends the view. Everything else that reads a
view (Softmax over another axis, Concat, Shape, a graph output, a Reshape of a moved
batch, a second view operand) is refused, naming the node. A mixin of
importer._Importer, ahead of Int8Ops.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

import numpy as np

from .. import build
from ..errors import ModelFormatError, UnsupportedOpError
from .checks import label
from .values import BATCH_SYM, Const, Pending, QConst

# (domain, op) of the row-wise ops; the ones acting on the last axis need it to be a
# per-sample axis (always true of Rows, whose batch is merged into axis 0).
_ROW_OPS = {("", op) for op in ("QuantizeLinear", "DequantizeLinear", "Identity", "Relu",
                                "Clip", "Sigmoid", "Tanh", "LeakyRelu", "Gemm", "MatMul",
                                "QLinearMatMul", "Softmax")} | \
    {("com.microsoft", op) for op in ("QGemm", "QLinearSigmoid", "QLinearLeakyRelu",
                                      "QLinearSoftmax")}
_LAST_AXIS = {"Gemm", "MatMul", "QLinearMatMul", "QGemm", "Softmax", "QLinearSoftmax"}


@dataclass(frozen=True)
class Rows:
    rows: int  # rows per sample: ONNX axis 0 is N * rows
    by: str  # the node that made the view, for messages


@dataclass(frozen=True)
class Moved:
    pos: int  # the ONNX axis that holds the batch
    by: str


# Graph metadata key of the views: JSON {ONNX tensor: ["rows", R] or ["moved", j]}, read by
# compare_ort.py to bring onnxruntime's tensor into Synapse's layout (same elements)
METADATA_KEY = "onnx_batch_views"


def to_metadata(views):
    return json.dumps({t: ["rows", v.rows] if isinstance(v, Rows) else ["moved", v.pos]
                       for t, v in sorted(views.items())}, separators=(",", ":"))


def _what(view):
    if isinstance(view, Rows):
        return (f"a tensor whose axis 0 merges the batch with {view.rows} rows per sample "
                f"(node {view.by} merges the batch axis into rows)")
    return f"a tensor whose batch is axis {view.pos} (node {view.by} moves the batch axis)"


_ORT_HINT = ("this Reshape was made by onnxruntime's optimizer in quant_pre_process: run it "
             "with skip_optimization=True, then quantize again")


def _hint(view, hint):
    return _ORT_HINT if "'gemm_input_reshape" in view.by else hint


def _by(node):
    return f"{label(node)!r} (op {node.op_type})"


class BatchViews:
    @functools.cached_property
    def views(self):
        """ONNX tensor name -> its batch view (Rows or Moved)."""
        return {}

    def _view_dispatch(self, node):
        """_dispatch, with the row-wise rule for nodes that read a batch view."""
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        op = node.op_type
        layout = domain == "" and op in ("Reshape", "Transpose")
        if layout and node.input and isinstance(self._in(node, 0), Pending):
            self._pending_view(node)
        read = [k for k, n in enumerate(node.input) if n in self.views]
        if not read:
            return self._dispatch(node)
        view = self.views[node.input[read[0]]]
        if read != [0] or any(not isinstance(self._in(node, i), (Const, QConst, type(None)))
                              for i in range(1, len(node.input))):
            self._fail(node, f"reads {_what(view)} next to another activation: only a "
                             "single-input row-wise op may read it", exc=UnsupportedOpError)
        if layout:
            return self._dispatch(node)  # the handler records its output's view
        if (domain, op) not in _ROW_OPS:
            self._fail(node, f"reads {_what(view)}; only row-wise ops (QuantizeLinear, "
                             "DequantizeLinear, Relu, Clip, LUT activations, Gemm/MatMul with "
                             "constant weights) may run before a Reshape or Transpose restores "
                             "the batch as axis 0", _hint(view, None), UnsupportedOpError)
        self._check_row_op(node, op, view)
        outs = self._dispatch(node)
        for o in node.output:
            if o in {g.name for g in self.g.output}:
                self._fail(node, f"graph output {o!r} would be {_what(view)}",
                           _hint(view, "end the model with the batch as axis 0"),
                           UnsupportedOpError)
            if o:
                self.views[o] = view
        return outs

    def _check_row_op(self, node, op, view):
        x = getattr(self._in(node, 0), "t", None)  # None: a pending op, whose handler refuses
        if op in _LAST_AXIS and isinstance(view, Moved) and x is not None and \
                view.pos == len(self.b.shapes[x]) - 1:
            self._fail(node, "its reduction axis (the last) is the batch", exc=UnsupportedOpError)
        if op in ("Softmax", "QLinearSoftmax") and int(self._attrs(node).get(
                "axis", -1 if op == "QLinearSoftmax" or self.opset >= 13 else 1)) != -1:
            self._fail(node, f"a softmax on {_what(view)} over an axis given as other than -1",
                       "give axis=-1 (the last axis)", UnsupportedOpError)
        if op in ("QuantizeLinear", "DequantizeLinear") and \
                np.asarray(self._const(node, 1, "scale")).size != 1:
            self._fail(node, f"a per-axis scale on {_what(view)}", exc=UnsupportedOpError)
        c = self._in(node, 2) if op == "Gemm" else None
        shape = c.q.shape if isinstance(c, QConst) else c.value.shape if c is not None else ()
        if len(shape) > 1 and math.prod(shape[:-1]) != 1:
            self._fail(node, f"bias of shape {list(shape)} differs per row",
                       exc=UnsupportedOpError)

    def _pending_view(self, node):
        """The view of a Reshape/Transpose of a float op's output, from its constants
        alone: the op runs later, when the QuantizeLinear gives the float op its scale
        (qdq.py's _after_pending), but the nodes in between need the view now. The
        handler then checks that it computes the same view (_keep)."""
        src, out = self.views.get(node.input[0]), node.output[0]
        if node.op_type == "Transpose":
            perm = self._attrs(node).get("perm")
            if perm is not None and not isinstance(src, Rows):
                s = self._synapse_axes(perm, src)
                if s.index(0):
                    self.views[out] = Moved(s.index(0), _by(node))
            return
        target = [int(d) for d in np.asarray(self._const(node, 1, "shape")).reshape(-1)]
        if target and not isinstance(src, Moved) and len(self.batch_sizes) == 1 and \
                (src is not None or target[0] not in self.batch_sizes):
            b, first = next(iter(self.batch_sizes)), target[0]
            if first > b and first % b == 0:
                self.views[out] = Rows(first // b, _by(node))

    def _keep(self, node, view, after_pending):
        if after_pending and self.views.get(node.output[0]) != view:
            self._fail(node, "moves the batch axis of a float op's output in a way its "
                             "constants alone do not show", "quantize its input "
                             "(QuantizeLinear) first", UnsupportedOpError)
        if view is not None:
            self.views[node.output[0]] = view

    @staticmethod
    def _synapse_axes(perm, src):
        """The Synapse axis of each output axis of a Transpose: input axis i is Synapse
        axis 0 where the batch is (j), i + 1 before it, i after it."""
        j = src.pos if src else 0
        return [0 if p == j else p + 1 if p < j else p for p in (int(p) for p in perm)]

    # ---- the view-making and view-ending layout ops ------------------------------------------
    def _Reshape(self, node, v=None):
        src = self.views.get(node.input[0])
        w, t = self._tensor_in(node, v)
        target = [int(d) for d in np.asarray(self._const(node, 1, "shape")).reshape(-1)]
        per = self.b.shapes[t][1:]
        first, rest = (target[0], target[1:]) if target else (None, [])
        rows_shape = bool(target) and min(rest, default=1) > 0 and (
            (first == -1 and math.prod(rest) != math.prod(per)) or
            (first is not None and first > 0 and first not in self.batch_sizes))
        if src is None and not rows_shape:
            return super()._Reshape(node, v)  # axis 0 stays the batch
        if isinstance(src, Moved):
            self._fail(node, f"reshapes {_what(src)}",
                       "transpose the batch back to axis 0 first", UnsupportedOpError)
        rows = self._rows(node, math.prod(per), first, rest)
        self._keep(node, Rows(rows, _by(node)) if rows > 1 else None, v is not None)
        return self._reshape(node, w, [rows, *rest] if rows > 1 else rest)

    def _rows(self, node, per_sample, first, rest):
        """Rows per sample of a target (first, *rest): each sample must be whole rows,
        and a static first dim must be the file's batch size times those rows."""
        q = math.prod(rest)
        why = None
        if min(rest, default=1) < 1:
            why = "a 0 or -1 after axis 0 is ambiguous once the batch is merged"
        elif per_sample % q:
            why = f"a sample's {per_sample} elements are not whole rows of {q}"
        elif first not in (-1, BATCH_SYM):
            if len(self.batch_sizes) != 1:
                why = "the file declares no single static batch size to match the rows to"
            elif first != next(iter(self.batch_sizes)) * (per_sample // q):
                why = (f"{first} rows are not batch {next(iter(self.batch_sizes))} x "
                       f"{per_sample // q} rows per sample")
        elif first == BATCH_SYM and per_sample != q:
            why = "a batch-sized axis 0 must hold whole samples"
        if why is None:
            return per_sample // q
        by_ort = label(node).startswith(("gemm_input_reshape", "gemm_output_reshape"))
        self._fail(node, f"target shape {[first, *rest]} does not keep axis 0 as the batch "
                         f"({why})",
                   _ORT_HINT if by_ort else
                   "Synapse runs any batch size: reshape per sample, e.g. [0, -1] or [-1, ...]",
                   UnsupportedOpError)

    def _Transpose(self, node, v=None):
        src = self.views.get(node.input[0])
        if isinstance(src, Rows):
            self._fail(node, f"transposes {_what(src)}",
                       "reshape the rows back to (N, ...) first", UnsupportedOpError)
        w, t = self._tensor_in(node, v)
        rank = len(self.b.shapes[t])
        perm = [int(p) for p in self._attrs(node).get("perm", range(rank - 1, -1, -1))]
        if sorted(perm) != list(range(rank)):
            self._fail(node, f"perm {perm} is not a permutation of rank {rank}",
                       exc=ModelFormatError)
        if src is None and perm[0] == 0:
            return super()._Transpose(node, v)
        s = self._synapse_axes(perm, src)
        self._keep(node, Moved(s.index(0), _by(node)) if s.index(0) else None, v is not None)
        order = [0] + [a for a in s if a]
        y = t if order == list(range(rank)) else \
            build.transpose(self.b, t, order, name=label(node))
        return self._same_kind(w, y)
