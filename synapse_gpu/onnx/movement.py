"""Data movement on quantized tensors: Slice, Split, Gather (constant indices), Tile,
Expand, Resize (nearest; linear with 8-bit integer weights), SpaceToDepth, DepthToSpace.

They only move int8 codes, so they commute with DequantizeLinear: on a Deq or an Int
they act on the codes and keep the quantization (as int8_ops.py's reshapes). Each
becomes one `take` node (reference/take.py: one constant index list per axis after
the batch, computed here) or, for SpaceToDepth/DepthToSpace, reshape -> transpose ->
reshape. Resize linear is the one with arithmetic: `resize_linear` (reference/resize.py).
Axis 0 is never indexed: an op that would select, repeat or resize samples is
refused, so samples never mix. A mixin of importer._Importer.
"""
from __future__ import annotations

import math

import numpy as np

from .. import build
from ..errors import ModelFormatError, UnsupportedOpError
from ..reference.requant import quantize_multiplier
from ..reference.resize import MAX_FRAC_BITS
from .checks import label
from .values import Pending

f32 = np.float32
_INT_MAX = (1 << 31) - 1
# They commute with an elementwise QuantizeLinear: the walk applies them after a pending
# op's emission, and the island pass treats them as layout ops (islands.py). Split too
# runs on codes, but has several outputs (CODE_OPS only).
MOVE_OPS = frozenset({"Slice", "Gather", "Tile", "Expand", "Resize", "SpaceToDepth",
                      "DepthToSpace"})


class MovementOps:
    def _take(self, node, v, t, lists, out_name=None):
        """v's codes indexed along axes 1.. by `lists` (None: the whole axis)."""
        shape = self.b.shapes[t]
        lists = [list(range(d)) if ix is None else [int(i) for i in ix]
                 for d, ix in zip(shape[1:], lists)]
        if any(len(ix) == 0 for ix in lists):
            self._fail(node, f"selects nothing along an axis of {list(shape)}",
                       exc=UnsupportedOpError)
        if all(ix == list(range(d)) for d, ix in zip(shape[1:], lists)):
            return v
        y = self.b.add_node("take", [t], attrs=dict(sizes=[len(ix) for ix in lists]),
                            params=dict(indices=np.array(sum(lists, []), np.int32)),
                            name=out_name or label(node), out_quant=self.b.quant[t])
        return self._same_kind(v, y)

    def _batch_untouched(self, node, what):
        self._fail(node, f"{what} axis 0, the batch: samples would be selected or mixed",
                   "Synapse keeps axis 0 as the batch; move the op to a per-sample axis",
                   UnsupportedOpError)

    def _const_ints(self, node, i, what, attr=None):
        if attr is not None and self.opset < 10:
            v = self._attrs(node).get(attr)
            return None if v is None else [int(x) for x in v]
        c = self._const(node, i, what, required=False)
        return None if c is None else [int(x) for x in c.reshape(-1)]

    # ---- Slice, Split, Gather ------------------------------------------------------------
    def _Slice(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        rank = len(shape)
        if self.opset < 10:
            a = self._attrs(node)
            starts, ends = [int(x) for x in a["starts"]], [int(x) for x in a["ends"]]
            axes, steps = a.get("axes"), None
        else:
            starts = self._const_ints(node, 1, "starts")
            ends = self._const_ints(node, 2, "ends")
            axes, steps = self._const_ints(node, 3, "axes"), self._const_ints(node, 4, "steps")
        axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
        steps = [1] * len(starts) if steps is None else steps
        if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
            self._fail(node, "starts, ends, axes and steps must have one non-zero entry per axis",
                       exc=ModelFormatError)
        lists = [None] * (rank - 1)
        for s, e, ax, st in zip(starts, ends, axes, steps):
            if ax == 0:
                if (s, st) != (0, 1) or e < _INT_MAX:
                    self._batch_untouched(node, "slices")
                continue
            lists[ax - 1] = list(range(shape[ax]))[s:e:st]  # Python's clamping is ONNX's
        return self._take(node, v, t, lists)

    def _Split(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        a = self._attrs(node)
        axis = int(a.get("axis", 0)) % len(shape)
        if axis == 0:
            self._batch_untouched(node, "splits")
        parts = self._const_ints(node, 1, "split") if self.opset >= 13 else a.get("split")
        n_out, d = len(node.output), shape[axis]
        if not parts:
            size = -(-d // n_out)  # ONNX: equal parts, the last one smaller if it must be
            parts = [min(size, d - k * size) for k in range(n_out)]
        if len(parts) != n_out or sum(parts) != d or min(parts) < 1:
            self._fail(node, f"split {list(parts)} of an axis of {d} into {n_out} outputs",
                       exc=ModelFormatError)
        outs, start = [], 0
        for k, p in enumerate(parts):
            lists = [None] * (len(shape) - 1)
            lists[axis - 1] = range(start, start + p)
            outs.append(self._take(node, v, t, lists, out_name=f"{label(node)}.{k}"))
            start += p
        return outs

    def _Gather(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        axis = int(self._attrs(node).get("axis", 0)) % len(shape)
        if axis == 0:
            self._batch_untouched(node, "gathers along")
        idx = self._const(node, 1, "indices")
        if idx.dtype.kind not in "iu":
            self._fail(node, f"indices of dtype {idx.dtype}", exc=ModelFormatError)
        d = shape[axis]
        flat = idx.reshape(-1).astype(np.int64)
        if flat.size == 0 or flat.min() < -d or flat.max() >= d:
            self._fail(node, f"indices outside [-{d}, {d})", exc=ModelFormatError)
        lists = [None] * (len(shape) - 1)
        lists[axis - 1] = np.where(flat < 0, flat + d, flat)
        y = self._take(node, v, t, lists)
        out = [*shape[1:axis], *idx.shape, *shape[axis + 1:]]
        return self._reshape(node, y, out) if list(self.b.shapes[y.t][1:]) != out else y

    # ---- Tile, Expand ----------------------------------------------------------------------
    def _Tile(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        reps = self._const_ints(node, 1, "repeats")
        if len(reps) != len(shape) or min(reps) < 1:
            self._fail(node, f"repeats {reps} for rank {len(shape)}", exc=ModelFormatError)
        if reps[0] != 1:
            self._batch_untouched(node, "repeats")
        return self._take(node, v, t, [np.tile(np.arange(d), r) for d, r in
                                       zip(shape[1:], reps[1:])])

    def _Expand(self, node, v=None):
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        target = self._const_ints(node, 1, "shape")
        if len(target) > len(shape):
            self._fail(node, f"expands {list(shape)} to rank {len(target)}: the batch would "
                             "no longer be axis 0", exc=UnsupportedOpError)
        target = [1] * (len(shape) - len(target)) + target
        if target[0] != 1 and target[0] not in self.batch_sizes:
            self._batch_untouched(node, "expands")
        lists = []
        for d, e in zip(shape[1:], target[1:]):
            if d != 1 and e not in (1, d):
                self._fail(node, f"shape {target} does not broadcast {list(shape)}",
                           exc=ModelFormatError)
            lists.append([0] * e if d == 1 and e > 1 else None)
        return self._take(node, v, t, lists)

    # ---- Resize (nearest) ------------------------------------------------------------------
    _COORD = {
        "half_pixel": lambda o, s, n, m: (o + f32(0.5)) / s - f32(0.5),
        "pytorch_half_pixel": lambda o, s, n, m: (o + f32(0.5)) / s - f32(0.5) if m > 1
        else f32(0) * o,
        "asymmetric": lambda o, s, n, m: o / s,
        "tf_half_pixel_for_nn": lambda o, s, n, m: (o + f32(0.5)) / s,
        "align_corners": lambda o, s, n, m: o * f32(n - 1) / f32(m - 1) if m > 1 else f32(0) * o,
    }
    _NEAREST = {
        "round_prefer_floor": lambda x: np.where(x - np.floor(x) == f32(0.5), np.floor(x),
                                                 np.round(x)),
        "round_prefer_ceil": lambda x: np.where(x - np.floor(x) == f32(0.5), np.ceil(x),
                                                np.round(x)),
        "floor": np.floor, "ceil": np.ceil,
    }

    def _Resize(self, node, v=None):
        after_pending = v is not None
        v, t = self._tensor_in(node, v)
        shape = self.b.shapes[t]
        a = self._attrs(node)
        mode = a.get("mode", "nearest")
        coord = a.get("coordinate_transformation_mode", "half_pixel" if self.opset >= 11
                      else "asymmetric")
        nearest = a.get("nearest_mode", "round_prefer_floor" if self.opset >= 11 else "floor")
        if mode not in ("nearest", "linear"):
            self._fail(node, f"mode {mode!r}: only nearest and linear resizing have a Synapse "
                             "rule", "resize with mode='nearest' or 'linear'", UnsupportedOpError)
        if coord not in self._COORD or nearest not in self._NEAREST or \
                int(a.get("antialias", 0)) or "axes" in a or \
                a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            self._fail(node, f"coordinate_transformation_mode {coord!r}, nearest_mode "
                             f"{nearest!r} (or antialias/axes/keep_aspect_ratio_policy) is not "
                             "supported", exc=UnsupportedOpError)
        scales = self._const(node, 1 if self.opset < 11 else 2, "scales", required=False)
        sizes = None if self.opset < 11 else self._const(node, 3, "sizes", required=False)
        if sizes is not None and sizes.size:
            out = [int(s) for s in sizes.reshape(-1)]
            scales = [f32(o) / f32(d) for o, d in zip(out[1:], shape[1:])]
            batch_ok = out[0] in self.batch_sizes  # the file's declared batch size
        elif scales is not None and scales.size:
            sc = [f32(s) for s in scales.reshape(-1)]
            out = [int(math.floor(f32(d) * s)) for d, s in zip(shape[1:], sc[1:])]  # float32
            scales, batch_ok = sc[1:], sc[0] == 1
            out = [shape[0], *out]
        else:
            self._fail(node, "needs constant scales or sizes", exc=ModelFormatError)
        if len(out) != len(shape):
            self._fail(node, f"scales/sizes for rank {len(out)}, input rank {len(shape)}",
                       exc=ModelFormatError)
        if not batch_ok:
            self._batch_untouched(node, "resizes")
        coords = []
        for d, m, s in zip(shape[1:], out[1:], scales):
            o = np.arange(m, dtype=np.float32)
            with np.errstate(all="ignore"):
                coords.append(self._COORD[coord](o, f32(s), d, m).astype(np.float32))
        if mode == "linear":
            return self._resize_linear(node, v, t, coords, after_pending)
        lists = [np.clip(self._NEAREST[nearest](x), 0, d - 1).astype(np.int64)
                 for x, d in zip(coords, shape[1:])]
        return self._take(node, v, t, lists)

    def _resize_linear(self, node, v, t, coords, after_pending):
        """resize_linear (reference/resize.py): per axis lo, hi and the 8-bit weight of hi.
        After a pending op (v given) it keeps that op's output scale (a convex combination
        stays in range); otherwise it waits for the QuantizeLinear that reads it."""
        shape = self.b.shapes[t]
        if len(shape) > 4:
            self._fail(node, f"linear resize of a rank-{len(shape)} tensor (at most 4)",
                       exc=UnsupportedOpError)
        idx, weights, lam = [], [], []
        for x, d in zip(coords, shape[1:]):
            x = np.clip(x, f32(0), f32(d - 1))  # onnxruntime clamps the coordinate
            lo = np.floor(x).astype(np.int64)
            idx += [lo, np.minimum(lo + 1, d - 1)]
            lam.append((x - lo.astype(np.float32)).astype(np.float64))
        bits = MAX_FRAC_BITS // max(1, sum(bool(v.any()) for v in lam))
        frac = [bits if v.any() else 0 for v in lam]
        for v, f in zip(lam, frac):
            weights.append(np.rint(v * (1 << f)).astype(np.int64))
        params = dict(indices=np.concatenate(idx).astype(np.int32),
                      weights=np.concatenate(weights).astype(np.int32))
        sizes = [len(x) for x in coords]

        def emit(ys, yz, qmin, qmax):
            s_x, z_x = self.b.quant[t]
            m, k = quantize_multiplier(f32(s_x) / f32(ys))
            return self.b.add_node("resize_linear", [t], attrs=dict(
                sizes=sizes, frac_bits=frac, x_zero_point=int(z_x), y_zero_point=int(yz),
                multiplier=int(m), shift=int(k), qmin=int(qmin), qmax=int(qmax)), params=params,
                name=label(node), out_quant=(ys, yz))
        if after_pending:
            return self._same_kind(v, emit(*self.b.quant[t], -128, 127))
        return Pending(node, emit)

    # ---- SpaceToDepth, DepthToSpace ----------------------------------------------------------
    def _SpaceToDepth(self, node, v=None):
        v, t = self._tensor_in(node, v)
        n, c, h, w = self._nchw(node, t)
        b = int(self._attrs(node)["blocksize"])
        if b < 1 or h % b or w % b:
            self._fail(node, f"blocksize {b} does not divide {h}x{w}", exc=ModelFormatError)
        return self._shuffle(node, v, t, [c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4],
                             [c * b * b, h // b, w // b])

    def _DepthToSpace(self, node, v=None):
        v, t = self._tensor_in(node, v)
        n, c, h, w = self._nchw(node, t)
        a = self._attrs(node)
        b = int(a["blocksize"])
        if b < 1 or c % (b * b):
            self._fail(node, f"blocksize {b}: {c} channels are not a multiple of {b * b}",
                       exc=ModelFormatError)
        mode = a.get("mode", "DCR")
        if mode == "DCR":
            split, perm = [b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2]
        elif mode == "CRD":
            split, perm = [c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]
        else:
            self._fail(node, f"mode {mode!r} is not an ONNX value", exc=ModelFormatError)
        return self._shuffle(node, v, t, split, perm, [c // (b * b), h * b, w * b])

    def _nchw(self, node, t):
        shape = self.b.shapes[t]
        if len(shape) != 4:
            self._fail(node, f"input {list(shape)} is not (N, C, H, W)", exc=ModelFormatError)
        return shape

    def _shuffle(self, node, v, t, split, perm, out):
        name = label(node)
        y = build.reshape(self.b, t, split, name=f"{name}.split")
        y = build.transpose(self.b, y, perm, name=f"{name}.move")
        return self._same_kind(v, build.reshape(self.b, y, out, name=name))
