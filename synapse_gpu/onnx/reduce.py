"""ReduceMean, ReduceSum, ReduceMax over any axes but the batch, on existing integer ops.

  kept axes exactly [1] (a spatial mean, (N, C, *sp) -> (N, C, 1...)):
      ReduceMean  global_avg_pool, M = f32(s_x / f32(s_y n))  (QLinearGlobalAveragePool's rule)
      ReduceSum   global_avg_pool, M = f32(s_x / s_y)          (the same sum, no division)
  any other axes: transpose the reduced axes last (the batch stays axis 0), reshape to
  (N, 1, K, R) (K kept, R reduced elements), then a (1, R) window:
      ReduceMean  avg_pool, M/R = f32(f32(s_x / s_y) / R)      (docs/ops_rules.md's avg_pool)
      ReduceSum   avg_pool whose multiplier table is f32(s_x / s_y) at every count
  ReduceMax       max_pool over the same layout: max commutes with DequantizeLinear, so it
                  runs on the codes and keeps the scale (a QuantizeLinear after it requantizes)
then a reshape to ONNX's output shape (keepdims or not). Sums are exact int32
(|sum| <= 255 R < 2^31 for any tensor the importer accepts).
A mixin of importer._Importer: its handlers are found by op name.
"""
from __future__ import annotations

import math

import numpy as np

from .. import build
from ..errors import UnsupportedOpError
from ..reference.requant import quantize_multiplier
from .checks import label
from .values import Deq, Pending

f32 = np.float32


class ReduceOps:
    def _ReduceMean(self, node):
        return self._reduce(node, "mean")

    def _ReduceSum(self, node):
        return self._reduce(node, "sum")

    def _ReduceMax(self, node):
        return self._reduce(node, "max")

    def _reduce_axes(self, node, rank):
        a = self._attrs(node)
        if node.op_type == "ReduceSum" and self.opset >= 13 or self.opset >= 18:
            axes = self._const(node, 1, "axes", required=False)
            axes = None if axes is None else [int(v) for v in axes.reshape(-1)]
        else:
            axes = a.get("axes")
        if not axes:
            if int(a.get("noop_with_empty_axes", 0)):
                return []
            self._fail(node, "reduces over every axis, the batch included",
                       "give the axes explicitly, without axis 0", UnsupportedOpError)
        axes = sorted({int(v) % rank for v in axes})
        if 0 in axes:
            self._fail(node, f"axes {axes} include axis 0, the batch: it would mix samples",
                       exc=UnsupportedOpError)
        return axes

    def _reduce(self, node, kind):
        x = self._deq(node, 0)
        xt = self._deq_t(x)
        shape = self.b.shapes[xt]
        axes = self._reduce_axes(node, len(shape))
        keep = bool(int(self._attrs(node).get("keepdims", 1)))
        out = [1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes][1:]
        if not axes:
            return x
        if kind == "max":
            y = self._reduce_window(node, xt, axes, kind, None)
            return Deq(build.reshape(self.b, y, out, name=f"{label(node)}.shape"), x.scale, x.zp)

        def emit(ys, yz, qmin, qmax):
            if axes == list(range(2, len(shape))):
                y = self._reduce_global(node, xt, kind, ys, yz)
            else:
                y = self._reduce_window(node, xt, axes, kind, (ys, yz))
            if list(self.b.shapes[y][1:]) != out:
                y = build.reshape(self.b, y, out, name=f"{label(node)}.shape")
            return self._clip(y, qmin, qmax, node)
        return Pending(node, emit)

    def _reduce_global(self, node, x, kind, ys, yz):
        if kind == "mean":
            return build.global_avg_pool(self.b, x, y_scale=ys, y_zero_point=yz, name=label(node))
        s_x, zx = self.b.quant[x]
        m, k = quantize_multiplier(f32(s_x) / f32(ys))
        return self.b.add_node("global_avg_pool", [x], attrs=dict(
            x_zero_point=zx, y_zero_point=int(yz), multiplier=int(m), shift=int(k)),
            name=label(node), out_quant=(ys, yz))

    def _reduce_window(self, node, x, axes, kind, yq):
        """(N, ...) -> (N, 1, K, R) -> a (1, R) pool -> (N, 1, K, 1)."""
        shape = self.b.shapes[x]
        kept = [i for i in range(1, len(shape)) if i not in axes]
        perm = [0, *kept, *axes]
        if perm != list(range(len(shape))):
            x = build.transpose(self.b, x, perm, name=f"{label(node)}.axes_last")
        K, R = math.prod(shape[i] for i in kept), math.prod(shape[i] for i in axes)
        x = build.reshape(self.b, x, [1, K, R], name=f"{label(node)}.rows")
        if kind == "max":
            return build.max_pool(self.b, x, [1, R], name=label(node))
        ys, yz = yq
        if kind == "mean":
            return build.avg_pool(self.b, x, [1, R], y_scale=ys, y_zero_point=yz, name=label(node))
        s_x, zx = self.b.quant[x]
        m, k = quantize_multiplier(np.full(R + 1, f32(s_x) / f32(ys), f32))
        return self.b.add_node("avg_pool", [x], attrs=dict(
            kernel_shape=[1, R], strides=[1, 1], pads=[0, 0, 0, 0], ceil_mode=0,
            count_include_pad=0, x_zero_point=zx, y_zero_point=int(yz)),
            params=dict(multiplier=m.astype(np.int64), shift=k.astype(np.int64)),
            name=label(node), out_quant=(ys, yz))
