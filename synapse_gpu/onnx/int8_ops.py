"""Ops that run on the int8 codes directly: MaxPool, Relu, Clip, Reshape, Flatten,
Transpose, Squeeze, Unsqueeze, Pad and Concat, plus Identity, Shape and Cast.

They commute with DequantizeLinear, so on a Deq they act on its codes and keep its
quantization (a Concat of Deqs waits, like a float op, for the QuantizeLinear that
gives its one output scale); a Relu or Clip after a pending op becomes that op's
output clamp. Reshapes keep axis 0 as the batch. MaxPool and the layout ops take an
optional input value: qdq.py's _after_pending applies them to a pending op's
output. A mixin of importer._Importer: its handlers are found by op name.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from onnx import TensorProto

from .. import build
from ..errors import ModelFormatError, UnsupportedOpError
from ..graph import BATCH
from .checks import label, type_name
from .fold import reshape_target
from .values import BATCH_SYM, Acc, Const, Deq, FloatIn, Int, Pending, describe


class Int8Ops:
    # ---- the batch-keeping shape rules -------------------------------------------------------
    def _sample_shape(self, node, t, target, allowzero=0):
        """Per-sample target shape of a Reshape of tensor t (axis 0 must stay the batch)."""
        target = [int(v) for v in np.asarray(target).reshape(-1)]
        first = target[0] if target else None
        if first not in (BATCH_SYM, 0, -1) and first not in self.batch_sizes:
            by_ort = label(node).startswith(("gemm_input_reshape", "gemm_output_reshape"))
            hint = ("this Reshape was made by onnxruntime's optimizer in quant_pre_process "
                    "(a MatMul over 3+ axes became Reshape -> Gemm -> Reshape, folding the batch "
                    "into rows): run quant_pre_process with skip_optimization=True, then quantize "
                    "again" if by_ort else
                    "Synapse runs any batch size: reshape per sample, e.g. [0, -1] or [-1, ...]")
            self._fail(node, f"target shape {target} does not keep axis 0 as the batch", hint,
                       UnsupportedOpError)
        rest = target[1:]
        if BATCH_SYM in rest or (first == -1 and -1 in rest):
            self._fail(node, f"target shape {target} depends on the batch size",
                       exc=UnsupportedOpError)
        # rest[i] is full axis i + 1, per-sample axis i: its 0 copies per-sample dim i
        return reshape_target(node, self.b.shapes[t][1:], rest, allowzero)

    def _reshape(self, node, v, per_sample):
        if list(self.b.shapes[v.t][1:]) == list(per_sample):
            return v
        t = build.reshape(self.b, v.t, per_sample, name=label(node))
        return Int(t, v.dtype) if isinstance(v, Int) else Deq(t, v.scale, v.zp)

    def _same_kind(self, v, t):
        return Int(t, v.dtype) if isinstance(v, Int) else Deq(t, v.scale, v.zp)

    def _tensor_in(self, node, v=None):
        """Input 0 (or v) as (value, tensor): an Int, or a Deq whose tensor carries the
        DequantizeLinear's quantization."""
        v = self._in(node, 0) if v is None else v
        if isinstance(v, Deq):
            v = Deq(self._deq_t(v), v.scale, v.zp)
        elif not isinstance(v, Int):
            self._fail(node, f"input 0 is {describe(v)}; this op runs on quantized tensors only",
                       "quantize the op's input (QDQ) or fold the op")
        return v, v.t

    # ---- ops on int8 tensors that also commute with DequantizeLinear --------------------------
    def _Identity(self, node):
        return self._in(node, 0)

    def _Dropout(self, node):
        """Inference: the identity (the mask output, a training artefact, is refused)."""
        if len(node.output) > 1 and node.output[1]:
            self._fail(node, "the mask output is not supported", exc=UnsupportedOpError)
        return self._in(node, 0)

    def _MaxPool(self, node, v=None):
        if len(node.output) > 1 and node.output[1]:
            self._fail(node, "the Indices output is not supported", exc=UnsupportedOpError)
        a = self._attrs(node)
        if int(a.get("storage_order", 0)):
            self._fail(node, "storage_order=1 is not supported", exc=UnsupportedOpError)
        v, t = self._tensor_in(node, v)
        kernel = [int(k) for k in a["kernel_shape"]]
        nd = len(kernel)
        strides, dil = self._spatial_attrs(node, {k: a[k] for k in ("strides", "dilations")
                                                  if k in a}, nd, kernel)
        y = build.max_pool(self.b, t, kernel, strides, self._pads(node, a, nd), dil,
                           int(a.get("ceil_mode", 0)), name=label(node))
        return self._same_kind(v, y)

    def _Relu(self, node):
        v = self._in(node, 0)
        if isinstance(v, (Pending, Acc)):
            return self._with_clamp(v, 0.0, None)
        if isinstance(v, Int):  # ONNX Relu on integer codes: max(q, 0)
            if v.dtype == TensorProto.UINT8:
                return v
            return Int(self._clip(v.t, 0, 127, node), v.dtype)
        if isinstance(v, Deq):
            return Deq(build.relu(self.b, self._deq_t(v), name=label(node)), v.scale, v.zp)
        self._fail(node, f"its input is {describe(v)}")

    def _Clip(self, node):
        v = self._in(node, 0)
        if self.opset < 11:
            a = self._attrs(node)
            lo, hi = a.get("min"), a.get("max")
        else:
            lo, hi = (self._const(node, i, "bound", required=False) for i in (1, 2))
            lo, hi = (None if b is None else b.reshape(-1)[0] for b in (lo, hi))
        if isinstance(v, (Pending, Acc)):
            return self._with_clamp(v, lo, hi)
        if isinstance(v, Int):
            shift = 128 if v.dtype == TensorProto.UINT8 else 0
            qlo = -128 if lo is None else int(np.clip(int(lo) - shift, -128, 127))
            qhi = 127 if hi is None else int(np.clip(int(hi) - shift, -128, 127))
            return Int(self._clip(v.t, qlo, qhi, node), v.dtype)
        if isinstance(v, Deq):
            return Deq(build.clip(self.b, self._deq_t(v), lo, hi, name=label(node)), v.scale, v.zp)
        self._fail(node, f"its input is {describe(v)}")

    def _with_clamp(self, v, lo, hi):
        """A Relu/Clip after a pending op: intersect its real clamp bounds."""
        lo = v.lo if lo is None else float(lo) if v.lo is None else max(v.lo, float(lo))
        hi = v.hi if hi is None else float(hi) if v.hi is None else min(v.hi, float(hi))
        if isinstance(v, Pending):
            return Pending(v.node, v.emit, lo, hi)
        return dataclasses.replace(v, lo=lo, hi=hi)

    def _Reshape(self, node, v=None):
        v, t = self._tensor_in(node, v)
        target = self._const(node, 1, "shape")
        allowzero = int(self._attrs(node).get("allowzero", 0))
        return self._reshape(node, v, self._sample_shape(node, t, target, allowzero))

    def _Flatten(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        axis = int(self._attrs(node).get("axis", 1))
        axis = axis + len(shape) if axis < 0 else axis
        # ONNX Flatten gives (prod(shape[:axis]), prod(shape[axis:])): the batch must be
        # the whole first factor.
        if axis == 0 or math.prod(shape[1:axis]) != 1:
            self._fail(node, f"axis {axis} of {list(shape)} would fold other axes into the "
                             "batch", exc=UnsupportedOpError)
        if axis == 1:
            return self._same_kind(v, build.flatten(self.b, t, name=label(node)))
        return self._reshape(node, self._same_kind(v, t), [math.prod(shape[axis:])])

    def _Transpose(self, node, v=None):
        v, t = self._tensor_in(node, v)
        rank = len(self.b.shapes[t])
        perm = [int(p) for p in self._attrs(node).get("perm", range(rank - 1, -1, -1))]
        if perm == list(range(rank)):
            return self._same_kind(v, t)
        if sorted(perm) != list(range(rank)) or perm[0] != 0:
            self._fail(node, f"perm {perm} moves the batch axis", exc=UnsupportedOpError)
        return self._same_kind(v, build.transpose(self.b, t, perm, name=label(node)))

    def _axes_of(self, node, rank):
        a = self._attrs(node)
        if self.opset < 13:
            axes = a.get("axes")
        else:
            axes = self._const(node, 1, "axes", required=False)
            axes = None if axes is None else axes.reshape(-1).tolist()
        if axes is None:
            return None
        axes = [int(x) + rank if int(x) < 0 else int(x) for x in axes]
        if any(not 0 <= x < rank for x in axes):
            self._fail(node, f"axes {axes} out of range for rank {rank}", exc=ModelFormatError)
        if 0 in axes:
            self._fail(node, "acts on axis 0, the batch", exc=UnsupportedOpError)
        return axes

    def _Squeeze(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        axes = self._axes_of(node, len(shape))
        if axes is None:
            self._fail(node, "Squeeze without axes is ambiguous once the batch is dynamic",
                       "give the axes explicitly", UnsupportedOpError)
        if any(shape[i] != 1 for i in axes):
            self._fail(node, f"cannot squeeze axes {axes} of {list(shape)}", exc=ModelFormatError)
        return self._reshape(node, self._same_kind(v, t),
                             [d for i, d in enumerate(shape) if i and i not in axes])

    def _Unsqueeze(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = list(self.b.shapes[t])
        raw = self._attrs(node).get("axes") if self.opset < 13 else \
            self._const(node, 1, "axes").reshape(-1).tolist()
        axes = self._axes_of(node, len(shape) + len(raw))
        for ax in sorted(axes):
            shape.insert(ax, 1)
        return self._reshape(node, self._same_kind(v, t), shape[1:])

    def _Pad(self, node, v=None):
        v, t = self._tensor_in(node, v)
        a = self._attrs(node)
        rank = len(self.b.shapes[t])
        if self.opset < 11:
            pads, value = [int(p) for p in a["pads"]], a.get("value", 0.0)
        else:
            pads = [int(p) for p in self._const(node, 1, "pads").reshape(-1)]
            c = self._const(node, 2, "constant_value", required=False)
            value = 0 if c is None or c.size == 0 else c.reshape(-1)[0]
            axes = self._const(node, 3, "axes", required=False)
            if axes is not None:
                axes = [int(x) % rank for x in axes.reshape(-1)]
                full = [0] * (2 * rank)
                for k, ax in enumerate(axes):
                    full[ax], full[rank + ax] = pads[k], pads[len(axes) + k]
                pads = full
        mode = a.get("mode", "constant")
        if len(pads) != 2 * rank or pads[0] or pads[rank] or min(pads) < 0:
            self._fail(node, f"pads {pads}: non-negative, none on the batch axis",
                       exc=UnsupportedOpError)
        if mode not in ("constant", "edge", "reflect"):
            self._fail(node, f"mode {mode!r} is not supported", exc=UnsupportedOpError)
        if isinstance(v, Deq):
            return Deq(build.pad(self.b, t, pads, mode, float(value), name=label(node)),
                       v.scale, v.zp)
        q = int(np.clip(int(value) - (128 if v.dtype == TensorProto.UINT8 else 0), -128, 127))
        return Int(self.b.add_node("pad", [t], attrs=dict(pads=pads, mode=mode, value=q),
                                   name=label(node), out_quant=self.b.quant[t]), v.dtype)

    def _Concat(self, node):
        vs = [self._in(node, i) for i in range(len(node.input))]
        axis = int(self._attrs(node)["axis"])
        if all(isinstance(v, Deq) for v in vs):
            def emit(ys, yz, qmin, qmax):
                y = build.concat(self.b, [self._deq_t(v) for v in vs], axis, y_scale=ys,
                                 y_zero_point=yz, name=label(node))
                return self._clip(y, qmin, qmax, node)
            return Pending(node, emit)
        if all(isinstance(v, Int) for v in vs):  # raw int8 concat: one quantization for all
            q = self.b.quant[vs[0].t]
            y = build.concat(self.b, [self._as(v.t, *q) for v in vs], axis, y_scale=q[0],
                             y_zero_point=q[1], name=label(node))
            return Int(y, vs[0].dtype)
        self._fail(node, f"inputs are {sorted({describe(v) for v in vs})}; a concat needs all "
                         "inputs quantized")

    def _Shape(self, node):
        v = self._in(node, 0)
        if isinstance(v, FloatIn):
            shape = v.shape
        elif isinstance(v, (Int, Deq)):
            shape = self.b.shapes[v.t]
        else:
            self._fail(node, f"shape of {describe(v)}")
        a = self._attrs(node)
        vals = np.array([BATCH_SYM if d == BATCH else d for d in shape], np.int64)
        return Const(vals[slice(a.get("start", 0), a.get("end"))])

    def _Cast(self, node):
        v = self._in(node, 0)
        to = int(self._attrs(node)["to"])
        if isinstance(v, Acc) and to == TensorProto.FLOAT:
            return v
        if isinstance(v, Int) and to == v.dtype:
            return v
        self._fail(node, f"cast of {describe(v)} to {type_name(to)} has no integer form",
                   exc=UnsupportedOpError)
