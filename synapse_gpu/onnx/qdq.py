"""QDQ-format ops: QuantizeLinear, DequantizeLinear and the float ops between them.

DequantizeLinear of an int8 tensor gives a Deq, of a constant a QConst (weights and
biases stay integer). A float op on Deq inputs (Conv, Gemm, MatMul, Add, Mul, the
average pools, the LUT activations, Softmax, and the float islands PRelu and
BatchNormalization) becomes a Pending, which the QuantizeLinear after it emits as
ONE integer node at its output scale. The int32 accumulator of ConvInteger /
MatMulInteger (an Acc) takes its scale and bias from the float Mul and Add after
it and is emitted the same way. A mixin of importer._Importer: its handlers are
found by op name and use the importer's shared helpers.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from onnx import TensorProto

from .. import build
from ..errors import DtypeError, ModelFormatError, UnsupportedOpError
from .checks import label, type_name
from .values import (Acc, Const, Deq, FloatIn, Int, Pending, QConst, describe, int8_codes,
                     int8_onnx_type)

f32 = np.float32


class QDQOps:
    # ---- QuantizeLinear / DequantizeLinear ---------------------------------------------------
    def _check_q_attrs(self, node):
        a = self._attrs(node)
        if int(a.get("block_size", 0)):
            self._fail(node, "blocked quantization is not supported", exc=UnsupportedOpError)
        if int(a.get("output_dtype", 0)) not in (0, TensorProto.INT8, TensorProto.UINT8,
                                                 TensorProto.FLOAT):
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): output_dtype "
                             f"{type_name(a['output_dtype'])}: only int8/uint8 quantization")
        if int(a.get("precision", 0)) not in (0, TensorProto.FLOAT):
            self._fail(node, "only float32 precision is supported", exc=UnsupportedOpError)
        return a

    def _QuantizeLinear(self, node):
        a = self._check_q_attrs(node)
        x = self._in(node, 0)
        out_type = self._q_output_type(node)
        if isinstance(x, Const):
            return self._quantize_const(node, x.value, a)
        if isinstance(x, QConst):  # a dequantized weight quantized again (torch's shared weights)
            return self._quantize_const(node, x.real(), a)
        s, z, zt = self._yparams(node, 1, 2, out_type)
        if isinstance(x, FloatIn):  # its scale was checked against every reader in _inputs
            return Int(self.boundary[x.name], zt)
        if isinstance(x, Deq):
            if (float(f32(x.scale)), x.zp) == (float(f32(s)), z):
                return Int(self._deq_t(x), zt)
            t = build.requantize(self.b, self._deq_t(x), y_scale=s, y_zero_point=z,
                                 name=label(node))
            return Int(t, zt)
        if isinstance(x, Pending):
            return Int(self._emit(x, s, z), zt)
        if isinstance(x, Acc):
            return Int(self._emit_acc(x, s, z), zt)
        self._fail(node, f"its input is {describe(x)}, which has no integer form",
                   "every QuantizeLinear must follow a DequantizeLinear group (QDQ) or a "
                   "supported float op on dequantized inputs")

    def _quantize_const(self, node, x, a):
        if x.dtype.kind != "f" and x.dtype != np.int32:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): quantizes a {x.dtype} "
                             "constant")
        s = self._scale(node, 1, per_tensor=False)
        z, zt = self._zero_point(node, 2, self._q_output_type(node), s.shape)
        axis = int(a.get("axis", 1)) % max(x.ndim, 1)
        shape = [1] * x.ndim
        if s.ndim:
            if x.shape[axis] != s.size:
                self._fail(node, f"{s.size} scales for axis {axis} of shape {list(x.shape)}",
                           exc=ModelFormatError)
            shape[axis] = -1
        q = np.rint(x.astype(np.float32) / s.reshape(shape)) + z.reshape(shape)
        q = np.clip(q, -128, 127).astype(np.int16)
        return Const((q + 128).astype(np.uint8) if zt == TensorProto.UINT8 else q.astype(np.int8))

    def _DequantizeLinear(self, node):
        a = self._check_q_attrs(node)
        x = self._in(node, 0)
        if isinstance(x, Const):
            q = x.value
            if q.dtype == np.int32:
                s = self._scale(node, 1, per_tensor=False)
                zc = self._const(node, 2, "zero point", required=False)
                if zc is not None and (zc.dtype != np.int32 or zc.any()):
                    self._fail(node, "an int32 tensor needs a zero zero point",
                               exc=ModelFormatError)
                z = np.zeros(s.shape, np.int64)
            elif int8_onnx_type(q) is not None:
                s = self._scale(node, 1, per_tensor=False)
                z, zt = self._zero_point(node, 2, int8_onnx_type(q), s.shape)
                if zt != int8_onnx_type(q):
                    raise DtypeError(f"node {label(node)!r} (op {node.op_type}): a {q.dtype} "
                                     f"tensor with a {type_name(zt)} zero point")
                q = int8_codes(node, q, "input")
            else:
                raise DtypeError(f"node {label(node)!r} (op {node.op_type}): dequantizes a "
                                 f"{q.dtype} constant; expected int8, uint8 or int32")
            axis = int(a.get("axis", 1))
            if s.ndim:
                axis %= max(q.ndim, 1)
                if q.ndim == 0 or q.shape[axis] != s.size:
                    self._fail(node, f"{s.size} scales for axis {axis} of shape {list(q.shape)}",
                               exc=ModelFormatError)
            return QConst(q, s, z, axis)
        if isinstance(x, Int):
            s, z, zt = self._yparams(node, 1, 2, x.dtype)
            if zt != x.dtype:
                raise DtypeError(f"node {label(node)!r} (op {node.op_type}): input is "
                                 f"{type_name(x.dtype)} but its zero point is {type_name(zt)}")
            return Deq(x.t, s, z)
        self._fail(node, f"dequantizes {describe(x)}", "DequantizeLinear reads an int8/uint8 "
                   "tensor or initializer")

    # ---- emission of pending float ops -------------------------------------------------------
    def _emit(self, p, ys, yz):
        key = (float(f32(ys)), int(yz), p.lo, p.hi)
        if key not in p.done:
            qmin, qmax = self._clamp(ys, yz, p.lo, p.hi)
            p.done[key] = p.emit(ys, yz, qmin, qmax)
        return p.done[key]

    def _after_pending(self, node, p, handler):
        """A reshape or max pool of a pending op's float output: Q is monotone and
        elementwise, so Q(f(v)) = f(Q(v)); emit the op at the output scale, then f."""
        def emit(ys, yz, qmin, qmax):
            y = handler(node, Deq(self._emit(p, ys, yz), float(ys), int(yz)))
            return self._clip(y.t, qmin, qmax, node)
        return Pending(node, emit)

    def _emit_acc(self, acc, ys, yz):
        scale = np.ones(acc.channels, np.float32) if acc.scale is None else acc.scale
        qmin, qmax = self._clamp(ys, yz, acc.lo, acc.hi)
        bias = None if acc.bias is None else build.quantize_bias(acc.bias, f32(1), scale)
        return acc.emit(scale, bias, ys, yz, qmin, qmax)

    def _clamp(self, ys, yz, lo, hi):
        """Real clamp bounds quantized with the output scale: Q is monotone, so
        Q(clip(v, lo, hi)) = clip(Q(v), Q(lo), Q(hi)) exactly."""
        def q(v):
            return int(np.clip(np.rint(f32(v) / f32(ys)) + yz, -128, 127))
        return (-128 if lo is None else q(lo)), (127 if hi is None else q(hi))

    # ---- operands: dequantized activations, weights, biases ----------------------------------
    def _deq(self, node, i):
        v = self._in(node, i)
        if not isinstance(v, Deq):
            self._fail(node, f"input {i} must come from a DequantizeLinear of a quantized "
                             f"activation, got {describe(v)}",
                       "quantize the model (QDQ) so that every float op input is dequantized")
        return v

    def _weights(self, node, v, axis, channels, what="weight"):
        """(int8 codes, float32 scale (channels,), int64 zero point (channels,)) of a QConst."""
        if isinstance(v, Const):
            kind = "float" if v.value.dtype.kind == "f" else str(v.value.dtype)
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): {what} is a {kind} "
                             "constant without quantization; expected DequantizeLinear of an "
                             "int8 initializer (hint: quantize weights, e.g. quantize_static)")
        if not isinstance(v, QConst) or v.q.dtype != np.int8:
            self._fail(node, f"{what} must be DequantizeLinear of an int8/uint8 initializer, got "
                             f"{describe(v)}")
        return self._channel_params(node, v.q, v.scale, v.zp, v.axis, axis, channels, what)

    def _float_bias(self, node, v, unit, channels, beta=1.0):
        """int32 bias in accumulator units `unit` (float32 per channel) from a QDQ bias input.

        An int32 DequantizeLinear whose scale is the accumulator unit is taken as is
        (what onnxruntime's QDQ fusion does); anything else is requantized from its
        real value, rint(beta * b / unit).
        """
        if v is None:
            return None
        if isinstance(v, QConst) and v.q.dtype == np.int32 and beta == 1.0 and not v.zp.any():
            s = np.broadcast_to(v.scale, (channels,))
            if v.q.size in (1, channels) and np.allclose(s, unit, rtol=1e-5, atol=0):
                return np.broadcast_to(v.q.reshape(-1), (channels,))
        real = v.real() if isinstance(v, QConst) else v.value if isinstance(v, Const) else None
        if real is None or real.dtype.kind != "f" or real.size not in (1, channels):
            self._fail(node, f"bias must be a constant of {channels} values, got {describe(v)}")
        real = np.broadcast_to(real.reshape(-1).astype(np.float64) * beta, (channels,))
        return build.quantize_bias(real, f32(1), unit)

    # ---- QDQ float ops (Pending until their QuantizeLinear) ----------------------------------
    def _Conv(self, node):
        x = self._deq(node, 0)
        w = self._in(node, 1)
        M = w.q.shape[0] if isinstance(w, QConst) and w.q.ndim else 0
        wq, ws, wz = self._weights(node, w, 0, M)
        bias = self._float_bias(node, self._in(node, 2), f32(x.scale) * ws, M)

        def emit(ys, yz, qmin, qmax):
            return self._conv(node, self._deq_t(x), wq, ws, wz, bias, ys, yz, qmin, qmax)
        return Pending(node, emit)

    def _Gemm(self, node):
        a = self._attrs(node)
        if int(a.get("transA", 0)):
            self._fail(node, "transA=1 would move the batch axis", exc=UnsupportedOpError)
        x = self._deq(node, 0)
        trans = bool(int(a.get("transB", 0)))
        w = self._in(node, 1)
        if isinstance(w, QConst) and w.q.ndim != 2:
            self._fail(node, f"weight of shape {list(w.q.shape)} is not 2-D", exc=ModelFormatError)
        M = (w.q.shape[0] if trans else w.q.shape[1]) if isinstance(w, QConst) else 0
        wq, ws, wz = self._weights(node, w, 0 if trans else 1, M)
        alpha, beta = f32(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        bias = self._float_bias(node, self._in(node, 2), f32(alpha * f32(x.scale)) * ws, M, beta)

        def emit(ys, yz, qmin, qmax):
            return self._dense(node, self._deq_t(x), wq, ws, wz, bias, ys, yz, qmin, qmax, trans,
                               alpha=float(alpha))
        return Pending(node, emit)

    def _MatMul(self, node):
        x = self._deq(node, 0)
        w = self._in(node, 1)
        if isinstance(w, Deq):
            def emit_mm(ys, yz, qmin, qmax):
                y = build.matmul(self.b, self._deq_t(x), self._deq_t(w), y_scale=ys,
                                 y_zero_point=yz, name=label(node))
                return self._clip(y, qmin, qmax, node)
            return Pending(node, emit_mm)
        if isinstance(w, QConst) and w.q.ndim > 2 and all(d == 1 for d in w.q.shape[:-2]):
            w = QConst(w.q.reshape(w.q.shape[-2:]), w.scale, w.zp, w.axis - (w.q.ndim - 2))
        if isinstance(w, QConst) and w.q.ndim != 2:
            self._fail(node, f"a constant B of shape {list(w.q.shape)}: only 2-D weights",
                       exc=UnsupportedOpError)
        M = w.q.shape[1] if isinstance(w, QConst) else 0
        wq, ws, wz = self._weights(node, w, 1, M)

        def emit(ys, yz, qmin, qmax):
            return self._dense(node, self._deq_t(x), wq, ws, wz, None, ys, yz, qmin, qmax, False)
        return Pending(node, emit)

    def _Add(self, node):
        return self._add(node, [self._in(node, i) for i in range(2)])

    def _Sum(self, node):
        vs = [self._in(node, i) for i in range(len(node.input))]
        if len(vs) == 1:
            return vs[0]
        if len(vs) > 2 and all(isinstance(v, Deq) for v in vs):
            return self._sum_chain(node, vs)
        return self._add(node, vs)

    def _sum_chain(self, node, vs):
        """A Sum of 3+ inputs: adds in input order; each partial sum is quantized over the
        range its inputs' quantizations allow (islands.py's range rule), the last one
        at the output scale: one rounding per add."""
        def emit(ys, yz, qmin, qmax):
            t = self._deq_t(vs[0])
            for k, v in enumerate(vs[1:], 1):
                if k == len(vs) - 1:
                    relu, after = self._relu_or_clip(yz, qmin, qmax, node)
                    return after(build.add(self.b, t, self._deq_t(v), y_scale=ys,
                                           y_zero_point=yz, relu=relu, name=label(node)))
                (sa, za), (sb, zb) = self.b.quant[t], (v.scale, v.zp)
                lo = sa * (-128 - za) + sb * (-128 - zb)
                hi = sa * (127 - za) + sb * (127 - zb)
                s = float(f32((hi - lo) / 255))
                t = build.add(self.b, t, self._deq_t(v), y_scale=s,
                              y_zero_point=int(np.clip(np.rint(-128 - lo / s), -128, 127)),
                              name=f"{label(node)}.partial{k}")
        return Pending(node, emit)

    def _const_tensors(self, node, vs):
        """Hook: constant operands that become activations (attention.py)."""
        return vs

    def _add(self, node, vs):
        vs = self._const_tensors(node, vs)
        if any(isinstance(v, (Const, QConst)) for v in vs) and \
                any(isinstance(v, Deq) for v in vs):
            return self._const_operand(node, vs)
        if all(isinstance(v, Deq) for v in vs):
            def emit(ys, yz, qmin, qmax):
                relu, after = self._relu_or_clip(yz, qmin, qmax, node)
                return after(build.add(self.b, self._deq_t(vs[0]), self._deq_t(vs[1]), y_scale=ys,
                                       y_zero_point=yz, relu=relu, name=label(node)))
            return Pending(node, emit)
        acc = [v for v in vs if isinstance(v, Acc)]
        const = [v for v in vs if isinstance(v, Const)]
        if len(acc) == 1 and len(const) == 1 and acc[0].scale is not None:
            return self._acc_bias(node, acc[0], const[0].value)
        self._fail(node, f"adds {' and '.join(describe(v) for v in vs)}",
                   "both operands must be DequantizeLinear outputs (QDQ)")

    def _acc_bias(self, node, acc, b):
        if acc.bias is not None or acc.lo is not None or acc.hi is not None:
            self._fail(node, "a second bias or a bias after a clamp", exc=UnsupportedOpError)
        bias = self._per_channel(node, b, acc.channels, "bias", acc.rank, acc.axis)
        return dataclasses.replace(acc, bias=bias)

    def _per_channel(self, node, c, channels, what, rank=None, axis=1):
        """A constant as a (channels,) float32 vector. rank None: a 1-D parameter; else c
        broadcasts (numpy, from the right) against a rank-`rank` tensor and must vary
        along `axis` only."""
        c = np.asarray(c)
        full = c.shape if rank is None else (1,) * (rank - c.ndim) + c.shape
        along = 0 if rank is None else axis
        if c.ndim > (rank or 1) or full[along] not in (1, channels) or any(
                d != 1 for i, d in enumerate(full) if i != along):
            self._fail(node, f"{what} of shape {list(c.shape)} is not one value per channel "
                             f"({channels}, axis {axis})", exc=UnsupportedOpError)
        return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)

    def _Sub(self, node):
        return self._const_operand(node, [self._in(node, i) for i in range(2)])

    def _Div(self, node):
        return self._const_operand(node, [self._in(node, i) for i in range(2)])

    def _const_operand(self, node, vs):
        """Add/Sub/Mul/Div of a dequantized activation and a constant that is one value
        per channel (axis 1) or a scalar: y = gain[c] * x + offset[c], emitted as a
        batchnorm node (docs/SPEC.md: per-channel int8 gain, int32 offset)."""
        op = node.op_type
        xi = next((i for i, v in enumerate(vs) if isinstance(v, Deq)), None)
        ci = 1 - xi if xi is not None and len(vs) == 2 else None
        if ci is None or not isinstance(vs[ci], (Const, QConst)) or (op == "Div" and ci == 0):
            self._fail(node, f"{'/'.join(describe(v) for v in vs)}: an integer {op} needs "
                             "a dequantized activation and a constant divisor/operand, or two "
                             "dequantized activations (Add, Mul)",
                       "quantize both operands (QDQ) or make one a per-channel constant",
                       UnsupportedOpError)
        x = vs[xi]
        shape = self.b.shapes[self._deq_t(x)]
        c, axis = self._const_channels(node, vs[ci], shape)
        if op == "Div" and not c.all():
            self._fail(node, "divides by a constant with zero entries", exc=ModelFormatError)
        one, zero = np.ones_like(c), np.zeros_like(c)
        if op == "Div":
            gain, offset = 1 / c, zero
        else:
            gain, offset = {"Add": (one, c), "Mul": (c, zero),
                            "Sub": (one, -c) if ci == 1 else (-one, c)}[op]

        def emit(ys, yz, qmin, qmax):
            return self._affine(node, self._deq_t(x), gain, offset, ys, yz, qmin, qmax, axis)
        return Pending(node, emit)

    def _const_channels(self, node, v, shape):
        """A constant operand as (one float32 value per channel, the channel axis): axis 1,
        or the last axis of a rank-3+ tensor where only that one varies (channels-last,
        e.g. ConvNeXt's layer scale once onnxruntime's optimizer moved a Transpose past it)."""
        c = v.real() if isinstance(v, QConst) else v.value
        if c.dtype.kind != "f":
            self._fail(node, f"a {c.dtype} constant operand", "make it a float constant",
                       UnsupportedOpError)
        full = (1,) * (len(shape) - c.ndim) + c.shape
        axis = len(shape) - 1 if len(shape) > 2 and c.ndim <= len(shape) and full[-1] > 1 \
            else 1
        if c.ndim > len(shape) or any(d != 1 for i, d in enumerate(full) if i != axis) or \
                full[axis] not in (1, shape[axis]) or not np.isfinite(c).all():
            self._fail(node, f"a constant operand of shape {list(c.shape)} on a tensor of shape "
                             f"{list(shape)}: only a scalar or one finite value per channel "
                             "(axis 1, or the last axis) has an integer form",
                       "fold the constant into the neighbouring Conv/Gemm weights before "
                       "quantizing (onnxruntime's quant_pre_process folds BatchNormalization), "
                       "or reshape it to (C, 1, ...)", UnsupportedOpError)
        return np.broadcast_to(c.reshape(-1).astype(np.float64), (shape[axis],)).copy(), axis

    def _affine(self, node, x, gain, offset, ys, yz, qmin, qmax, axis=1):
        """y = gain[c] * x + offset[c] as a batchnorm node (mean 0, variance 1). Channels
        on another axis: transposed to axis 1 and back (moves of codes, exact)."""
        relu, after = self._relu_or_clip(yz, qmin, qmax, node)
        C = len(gain)
        perm = [0, axis, *range(1, axis), *range(axis + 1, len(self.b.shapes[x]))]
        name = label(node) if axis == 1 else f"{label(node)}.channels_first"  # ONNX's: the last
        if axis != 1:
            x = build.transpose(self.b, x, perm, name=f"{name}.in")
        y = after(build.batchnorm(self.b, x, gain, offset, np.zeros(C), np.ones(C), 0.0,
                                  y_scale=ys, y_zero_point=yz, relu=relu, name=name))
        back = [int(i) for i in np.argsort(perm)]
        return y if axis == 1 else build.transpose(self.b, y, back, name=label(node))

    def _Mul(self, node):
        vs = self._const_tensors(node, [self._in(node, i) for i in range(2)])
        if any(isinstance(v, (Const, QConst)) for v in vs) and \
                any(isinstance(v, Deq) for v in vs):
            return self._const_operand(node, vs)
        if all(isinstance(v, Deq) for v in vs):
            def emit(ys, yz, qmin, qmax):
                y = build.mul(self.b, self._deq_t(vs[0]), self._deq_t(vs[1]), y_scale=ys,
                              y_zero_point=yz, name=label(node))
                return self._clip(y, qmin, qmax, node)
            return Pending(node, emit)
        acc = [v for v in vs if isinstance(v, Acc)]
        const = [v for v in vs if isinstance(v, Const)]
        if len(acc) == 1 and len(const) == 1 and acc[0].bias is None and acc[0].lo is None \
                and acc[0].hi is None:
            a = acc[0]
            c = self._per_channel(node, const[0].value, a.channels, "scale", a.rank, a.axis)
            if not (np.isfinite(c) & (c > 0)).all():
                self._fail(node, "the accumulator scale must be positive", exc=UnsupportedOpError)
            return dataclasses.replace(a, scale=c if a.scale is None else a.scale * c)
        self._fail(node, f"multiplies {' and '.join(describe(v) for v in vs)}",
                   "both operands must be DequantizeLinear outputs (QDQ)")

    def _AveragePool(self, node):
        x = self._deq(node, 0)

        def emit(ys, yz, qmin, qmax):
            return self._clip(self._avg_pool(node, self._deq_t(x), ys, yz), qmin, qmax, node)
        return Pending(node, emit)

    def _GlobalAveragePool(self, node):
        x = self._deq(node, 0)

        def emit(ys, yz, qmin, qmax):
            y = build.global_avg_pool(self.b, self._deq_t(x), y_scale=ys, y_zero_point=yz,
                                      name=label(node))
            return self._clip(y, qmin, qmax, node)
        return Pending(node, emit)

    def _unary_lut(self, node, fn):
        x = self._deq(node, 0)

        def emit(ys, yz, qmin, qmax):
            y = self._lut(node, self._deq_t(x), ys, yz, fn)
            return self._clip(y, qmin, qmax, node)
        return Pending(node, emit)

    def _Sigmoid(self, node):
        return self._unary_lut(node, "sigmoid")

    def _Tanh(self, node):
        return self._unary_lut(node, "tanh")

    def _LeakyRelu(self, node):
        return self._unary_lut(node, "leaky_relu")

    def _Softmax(self, node):
        x = self._deq(node, 0)
        axis = int(self._attrs(node).get("axis", 1 if self.opset < 13 else -1))

        def emit(ys, yz, qmin, qmax):
            y = self._softmax(node, self._deq_t(x), ys, yz, axis, self.opset)
            return self._clip(y, qmin, qmax, node)
        return Pending(node, emit)

    def _float_param(self, node, i, what):
        v = self._in(node, i)
        if isinstance(v, QConst):
            return v.real()
        if isinstance(v, Const) and v.value.dtype.kind == "f":
            return v.value.astype(np.float32)
        self._fail(node, f"{what} (input {i}) must be a float constant, got {describe(v)}")

    def _PRelu(self, node):
        x = self._deq(node, 0)
        shape = self.b.shapes[self._deq_t(x)]
        slope = self._per_channel(node, self._float_param(node, 1, "slope"), shape[1], "slope",
                                  len(shape), 1)

        def emit(ys, yz, qmin, qmax):
            y = build.prelu(self.b, self._deq_t(x), slope, y_scale=ys, y_zero_point=yz,
                            name=label(node))
            return self._clip(y, qmin, qmax, node)
        return Pending(node, emit)

    def _BatchNormalization(self, node):
        a = self._attrs(node)
        if int(a.get("training_mode", 0)) or any(o for o in node.output[1:]):
            self._fail(node, "training mode / running statistics outputs are not supported",
                       exc=UnsupportedOpError)
        if int(a.get("spatial", 1)) != 1:
            self._fail(node, "spatial=0 is not supported", exc=UnsupportedOpError)
        x = self._deq(node, 0)
        C = self.b.shapes[self._deq_t(x)][1]
        gamma, beta, mean, var = (self._per_channel(node, self._float_param(node, i, w), C, w)
                                  for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
        eps = float(a.get("epsilon", 1e-5))
        if (var + eps <= 0).any():
            self._fail(node, "variance + epsilon must be positive", exc=ModelFormatError)

        def emit(ys, yz, qmin, qmax):
            relu, after = self._relu_or_clip(yz, qmin, qmax, node)
            return after(build.batchnorm(self.b, self._deq_t(x), gamma, beta, mean, var, eps,
                                         y_scale=ys, y_zero_point=yz, relu=relu, name=label(node)))
        return Pending(node, emit)
