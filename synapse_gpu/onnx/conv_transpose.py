"""ConvTranspose -> take (zero insertion and border padding) + conv (an integer conv rule).

A transposed convolution with strides s, dilations d, pads (b, e) and output_padding o
is the stride-1 convolution, with the kernel flipped and its in/out channels swapped
per group, of the input with s - 1 zeros inserted between elements and d (k - 1) - b
zeros before, d (k - 1) - e + o after (negative: cropped). The zeros are the zero point:
one z_x element is padded at the end of each spatial axis (`pad`), and one `take` index
list per axis picks an input element or that zero for every position. The accumulator
is then the same multiset of integer products as ConvTranspose's, so the exact int32
sum is the same (any order); the requantization is conv's, M_c = f32(f32(s_x s_w[c]) /
s_y). Refused: auto_pad other than NOTSET/VALID, output_shape, per-channel weights with
group > 1. A mixin of importer._Importer.
"""
from __future__ import annotations

import numpy as np

from .. import build
from ..errors import DtypeError, ModelFormatError, ShapeError, UnsupportedOpError
from .checks import label
from .values import Const, Pending, QConst

f32 = np.float32
# quantize_static's QOperator format leaves ConvTranspose float (it is not in
# onnxruntime.quantization's QLinearOpsRegistry) and onnxruntime's CPU provider has no
# com.microsoft QLinearConvTranspose: the QDQ form is the one both run.
QOPERATOR_HINT = ("quantize_static's QOperator format leaves ConvTranspose in float (onnxruntime "
                  "has no QLinearConvTranspose on CPU): quantize with QuantFormat.QDQ, whose "
                  "DequantizeLinear -> ConvTranspose -> QuantizeLinear Synapse imports")


class ConvTransposeOps:
    def _ConvTranspose(self, node):
        x = self._deq(node, 0)
        w = self._in(node, 1)
        a = self._attrs(node)
        if isinstance(w, Const) and w.value.dtype.kind == "f":
            self._fail(node, "its weight is a float constant", QOPERATOR_HINT, DtypeError)
        if not isinstance(w, QConst) or w.q.ndim < 3:
            self._weights(node, w, 0, 0)  # raises the weight error of Conv
            self._fail(node, "a 1-D, 2-D or 3-D weight is required", exc=ModelFormatError)
        nd, group = w.q.ndim - 2, int(a.get("group", 1))
        cin, cog = w.q.shape[0], w.q.shape[1]
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", "") or "output_shape" in a:
            self._fail(node, "auto_pad SAME_* and output_shape are not supported",
                       "give explicit pads and output_padding", UnsupportedOpError)
        if w.scale.ndim and group != 1:
            self._fail(node, "per-channel weights with group > 1", exc=UnsupportedOpError)
        if cin % group or self.b.shapes[self._deq_t(x)][1] != cin or \
                len(self.b.shapes[self._deq_t(x)]) != nd + 2:
            self._fail(node, f"input {list(self.b.shapes[self._deq_t(x)])} and weight "
                             f"{list(w.q.shape)} do not fit (group {group})", exc=ShapeError)
        M = cog * group
        # (C_in, C_out/g, k) -> (C_out, C_in/g, flipped k), group by group
        wq = w.q.reshape(group, cin // group, cog, *w.q.shape[2:]).swapaxes(1, 2)
        wq = np.flip(wq, axis=tuple(range(3, 3 + nd))).reshape(M, cin // group, *w.q.shape[2:])
        flat = QConst(np.ascontiguousarray(wq), w.scale, w.zp, 0 if w.scale.ndim else w.axis)
        if w.scale.ndim and w.axis % w.q.ndim != 1:
            self._fail(node, f"weights quantized along axis {w.axis}; only per-tensor or per "
                             "output channel (axis 1)", exc=UnsupportedOpError)
        wq, ws, wz = self._weights(node, flat, 0, M)
        bias = self._float_bias(node, self._in(node, 2), f32(x.scale) * ws, M)
        strides = [int(v) for v in a.get("strides", [1] * nd)]
        dil = [int(v) for v in a.get("dilations", [1] * nd)]
        pads = [int(v) for v in a.get("pads", [0] * (2 * nd))]
        out_pad = [int(v) for v in a.get("output_padding", [0] * nd)]
        if min(strides + dil, default=1) < 1 or len(pads) != 2 * nd or len(out_pad) != nd or \
                any(o < 0 or o >= max(s, d) for o, s, d in zip(out_pad, strides, dil)):
            self._fail(node, f"strides {strides}, dilations {dil}, pads {pads}, output_padding "
                             f"{out_pad} are not valid for a {nd}-D ConvTranspose",
                       exc=ModelFormatError)

        def emit(ys, yz, qmin, qmax):
            xt = self._deq_t(x)
            sp = self.b.shapes[xt][2:]
            z = build.pad(self.b, xt, [0, 0] + [0] * nd + [0, 0] + [1] * nd,
                          name=f"{label(node)}.zero")
            lists = [None]
            for i, n in enumerate(sp):
                k = (wq.shape[2 + i] - 1) * dil[i]
                before, after = k - pads[i], k - pads[nd + i] + out_pad[i]
                u = np.arange(-before, strides[i] * (n - 1) + 1 + after)
                inside = (u >= 0) & (u % strides[i] == 0) & (u // strides[i] < n)
                lists.append(np.where(inside, u // strides[i], n))  # n: the zero element
            if any(len(v) < (wq.shape[2 + i] - 1) * dil[i] + 1 for i, v in enumerate(lists[1:])):
                self._fail(node, "the output would be empty", exc=ShapeError)
            up = self._take(node, self._same_kind(x, z), z, lists,
                            out_name=f"{label(node)}.upsample").t
            return build.conv(self.b, up, wq, ws, bias, y_scale=ys, y_zero_point=yz,
                              w_zero_point=wz, dilations=dil, group=group, qmin=qmin,
                              qmax=qmax, name=label(node))
        return Pending(node, emit)
