"""QOperator-format ops: QLinearConv, QLinearMatMul, the com.microsoft Q* ops,
ConvInteger and MatMulInteger.

A QLinear/Q* op carries the scale and zero point of each input and of its output
as inputs of its own, so it becomes its integer node at once. ConvInteger and
MatMulInteger give an int32 accumulator (values.Acc) that the Cast -> Mul -> Add
-> QuantizeLinear after them completes (qdq.py). A mixin of importer._Importer:
its handlers are found by op name and use the importer's shared helpers.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .. import build
from ..errors import DtypeError, ModelFormatError, UnsupportedOpError
from .checks import label, type_name
from .values import (Acc, Const, Int, QConst, constant_node, describe, int8_codes, int8_onnx_type,
                     per_channel)


class QOperatorOps:
    # ---- operands: quantized inputs, weights, int32 biases -----------------------------------
    def _qin(self, node, i):
        """Quantized activation input i, its scale and zero point at i+1, i+2 (QOperator)."""
        v = self._in(node, i)
        if not isinstance(v, Int):
            self._fail(node, f"input {i} must be a quantized (int8/uint8) tensor, got "
                             f"{describe(v)}")
        s = self._scale(node, i + 1)
        z, zt = self._zero_point(node, i + 2, v.dtype)
        if zt != v.dtype:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): input {i} is "
                             f"{type_name(v.dtype)} but its zero point is {type_name(zt)}")
        return self._as(v.t, s, int(z))

    def _in_type(self, node, i):
        v = self._in(node, i)
        return v.dtype if isinstance(v, Int) else TensorProto.UINT8

    def _qoperator_weights(self, node, w, si, zi, axis):
        """(int8 codes, scale, zero point per output channel) of weights w (an array) whose
        scale and zero point are inputs si, zi."""
        if int8_onnx_type(w) is None:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): weight has dtype "
                             f"{w.dtype}, expected int8 or uint8")
        channels = w.shape[axis] if w.ndim else 1
        s = self._scale(node, si, per_tensor=False)
        z, zt = self._zero_point(node, zi, int8_onnx_type(w), s.shape)
        if zt != int8_onnx_type(w):
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): weight is {w.dtype} but "
                             f"its zero point is {type_name(zt)}")
        if s.ndim and s.size not in (1, channels):
            self._fail(node, f"weight scale has {s.size} entries for {channels} output channels",
                       exc=ModelFormatError)
        return self._channel_params(node, int8_codes(node, w, "weight"), s, z, axis, axis, channels,
                                    "weight")

    def _matmul_weights(self, node, wi, si, zi, trans):
        """2-D weights of a (Q)MatMul/QGemm: (codes, scale, zp) per output column."""
        w = self._const(node, wi, "weight")
        if w.ndim > 2 and all(d == 1 for d in w.shape[:-2]):
            w = w.reshape(w.shape[-2:])  # leading 1s broadcast over the batch
        if w.ndim != 2:
            self._fail(node, f"a constant B of shape {list(w.shape)} would be a different weight "
                             "per sample; only 2-D constant weights are supported",
                       exc=UnsupportedOpError)
        return self._qoperator_weights(node, w, si, zi, axis=0 if trans else 1)

    def _int32_bias(self, node, i, channels):
        bias = self._const(node, i, "bias", required=False)
        if bias is None:
            return None
        if bias.dtype != np.int32:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): bias has dtype "
                             f"{bias.dtype}, expected int32")
        if bias.size not in (1, channels) or bias.ndim > 2:
            self._fail(node, f"bias of shape {list(bias.shape)} for {channels} output channels",
                       exc=ModelFormatError)
        return np.broadcast_to(bias.reshape(-1), (channels,))

    # ---- QOperator ops -----------------------------------------------------------------------
    def _QLinearConv(self, node):
        x = self._qin(node, 0)
        wq, ws, wz = self._qoperator_weights(node, self._const(node, 3, "weight"), 4, 5, axis=0)
        ys, yz, yt = self._yparams(node, 6, 7, self._in_type(node, 0))
        bias = self._int32_bias(node, 8, wq.shape[0])
        return Int(self._conv(node, x, wq, ws, wz, bias, ys, yz, -128, 127), yt)

    def _QLinearMatMul(self, node):
        a = self._qin(node, 0)
        ys, yz, yt = self._yparams(node, 6, 7, self._in_type(node, 0))
        if isinstance(self._in(node, 3), Int):
            c = self._qin(node, 3)
            return Int(build.matmul(self.b, a, c, y_scale=ys, y_zero_point=yz, name=label(node)),
                       yt)
        wq, ws, wz = self._matmul_weights(node, 3, 4, 5, trans=False)
        return Int(self._dense(node, a, wq, ws, wz, None, ys, yz, -128, 127, False), yt)

    def _ms_QGemm(self, node):
        at = self._attrs(node)
        if int(at.get("transA", 0)):
            self._fail(node, "transA=1 would move the batch axis", exc=UnsupportedOpError)
        if len(node.input) < 8 or not node.input[7]:
            self._fail(node, "QGemm without y_scale has a float output", "quantize its output",
                       UnsupportedOpError)
        a = self._qin(node, 0)
        trans = bool(int(at.get("transB", 0)))
        wq, ws, wz = self._matmul_weights(node, 3, 4, 5, trans)
        bias = self._int32_bias(node, 6, wq.shape[0] if trans else wq.shape[1])
        ys, yz, yt = self._yparams(node, 7, 8, self._in_type(node, 0))
        return Int(self._dense(node, a, wq, ws, wz, bias, ys, yz, -128, 127, trans,
                               alpha=float(at.get("alpha", 1.0))), yt)

    def _integer_op(self, node, axis):
        """(x tensor seen with scale 1, int8 weights, weight zero points, channels) of a
        ConvInteger/MatMulInteger. With s_x = 1 the emitted multiplier is
        f32(scale_c / y_scale), scale_c the real unit of the accumulator (its Mul)."""
        x = self._in(node, 0)
        if not isinstance(x, Int):
            self._fail(node, f"input 0 must be a quantized tensor, got {describe(x)}")
        zx, zt = self._zero_point(node, 2, x.dtype)
        if zt != x.dtype:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): input 0 is "
                             f"{type_name(x.dtype)} but its zero point is {type_name(zt)}")
        w = self._const(node, 1, "weight")
        if int8_onnx_type(w) is None or w.ndim < 2:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): weight of dtype {w.dtype}"
                             f" and shape {list(w.shape)}; expected int8/uint8 with rank >= 2")
        zw = self._const(node, 3, "weight zero point", required=False)
        wz, _ = self._zero_point(node, 3, int8_onnx_type(w), () if zw is None else zw.shape)
        channels = w.shape[axis]
        return (self._as(x.t, 1.0, int(zx)), int8_codes(node, w, "weight"),
                np.broadcast_to(wz.reshape(-1), (channels,)), channels)

    def _ConvInteger(self, node):
        x, wq, wz, M = self._integer_op(node, 0)

        def emit(scale, bias, ys, yz, qmin, qmax):
            return self._conv(node, x, wq, scale, wz, bias, ys, yz, qmin, qmax)
        return Acc(node, emit, M, len(self.b.shapes[x]), 1)

    def _MatMulInteger(self, node):
        x, wq, wz, N = self._integer_op(node, 1)
        if wq.ndim != 2:
            self._fail(node, f"weight of shape {list(wq.shape)}: only 2-D", exc=UnsupportedOpError)

        def emit(scale, bias, ys, yz, qmin, qmax):
            return self._dense(node, x, wq, scale, wz, bias, ys, yz, qmin, qmax, False)
        rank = len(self.b.shapes[x])
        return Acc(node, emit, N, rank, rank - 1)

    def _ms_QLinearAdd(self, node):
        return self._binary(node, build.add)

    def _ms_QLinearMul(self, node):
        return self._binary(node, build.mul)

    def _binary(self, node, helper_fn):
        const = [i for i in (0, 3) if isinstance(self._in(node, i), Const)]
        if len(const) == 1 and self._channel_constant(node, const[0]):
            return self._qlinear_const_operand(node, const[0])
        a, c = (self._constant_tensor(node, i, 3 - i) if i in const else self._qin(node, i)
                for i in (0, 3))
        ys, yz, yt = self._yparams(node, 6, 7, self._in_type(node, 3 if const == [0] else 0))
        # QLinearAdd's float steps see the stored codes: uint8 ones are int8 + 128
        kw = {"code_offset": 128 if yt == TensorProto.UINT8 else 0} if helper_fn is build.add \
            else {}
        return Int(helper_fn(self.b, a, c, y_scale=ys, y_zero_point=yz, name=label(node), **kw),
                   yt)

    def _channel_constant(self, node, ci):
        """Whether constant input ci holds one value per channel (axis 1): the affine rule's.
        A scalar, a last-axis or any other shape is a constant tensor (_constant_tensor):
        the two-tensor rule is onnxruntime's, where the affine rule rounds once more."""
        c, x = self._in(node, ci).value, self._in(node, 3 - ci)
        if not isinstance(x, Int) or c.ndim > len(self.b.shapes[x.t]):
            return True  # the affine rule's errors name the problem
        return per_channel(c.shape, len(self.b.shapes[x.t]))

    def _constant_tensor(self, node, ci, xi):
        """Constant input ci (a positional embedding) as a `constant` node: its codes, in its
        own quantization, repeated per sample of activation input xi; the op is then the
        two-tensor rule (QLinearAdd/QLinearMul bit for bit)."""
        q = self._qconst_input(node, ci, "constant operand")
        return constant_node(self, node, self._qin(node, xi), q.q, q.scale, q.zp)

    def _qlinear_const_operand(self, node, ci):
        """QLinearAdd/QLinearMul with one constant input: y = x + c or x * c, c the
        constant's real value, one value per channel; emitted as qdq.py's affine rule."""
        xi = 3 - ci
        x = self._qin(node, xi)
        c, axis = self._const_channels(node, self._qconst_input(node, ci, "constant operand"),
                                       self.b.shapes[x])
        ys, yz, yt = self._yparams(node, 6, 7, self._in_type(node, xi))
        gain, offset = (np.ones_like(c), c) if node.op_type == "QLinearAdd" else \
            (c, np.zeros_like(c))
        return Int(self._affine(node, x, gain, offset, ys, yz, -128, 127, axis), yt)

    def _qconst_input(self, node, i, what):
        """Constant int8/uint8 input i, its scale and zero point at i+1, i+2, as a QConst."""
        q = self._const(node, i, what)
        if int8_onnx_type(q) is None:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): {what} has dtype "
                             f"{q.dtype}, expected int8 or uint8")
        z, _ = self._zero_point(node, i + 2, int8_onnx_type(q))
        return QConst(int8_codes(node, q, what), self._scale(node, i + 1), z, 0)

    def _channels_first(self, node):
        if int(self._attrs(node).get("channels_last", 0)):
            self._fail(node, "channels_last=1 is not supported (Synapse is channels-first)",
                       exc=UnsupportedOpError)

    def _ms_QLinearGlobalAveragePool(self, node):
        self._channels_first(node)
        x = self._qin(node, 0)
        ys, yz, yt = self._yparams(node, 3, 4, self._in_type(node, 0))
        return Int(build.global_avg_pool(self.b, x, y_scale=ys, y_zero_point=yz,
                                         name=label(node)), yt)

    def _ms_QLinearAveragePool(self, node):
        self._channels_first(node)
        x = self._qin(node, 0)
        ys, yz, yt = self._yparams(node, 3, 4, self._in_type(node, 0))
        return Int(self._avg_pool(node, x, ys, yz), yt)

    def _ms_QLinearConcat(self, node):
        ys, yz, yt = self._yparams(node, 0, 1)
        if (len(node.input) - 2) % 3 or len(node.input) < 5:
            self._fail(node, "inputs must be (Y_scale, Y_zero_point, then X, scale, zero point "
                             "per input)", exc=ModelFormatError)
        x = self._int_inputs(node, 2, 3)  # constant inputs: const_concat.py
        xs = [self._qlinear_concat_input(node, i, x, ys, yz)
              for i in range(2, len(node.input), 3)]
        return Int(build.concat(self.b, xs, int(self._attrs(node)["axis"]), y_scale=ys,
                                y_zero_point=yz, name=label(node)), yt)

    def _ms_QLinearSigmoid(self, node):
        return self._qlinear_lut(node, "sigmoid")

    def _ms_QLinearLeakyRelu(self, node):
        return self._qlinear_lut(node, "leaky_relu")

    def _qlinear_lut(self, node, fn):
        x = self._qin(node, 0)
        ys, yz, yt = self._yparams(node, 3, 4, self._in_type(node, 0))
        return Int(self._lut(node, x, ys, yz, fn), yt)

    def _ms_QLinearSoftmax(self, node):
        a = self._attrs(node)
        x = self._qin(node, 0)
        ys, yz, yt = self._yparams(node, 3, 4, self._in_type(node, 0))
        return Int(self._softmax(node, x, ys, yz, int(a.get("axis", -1)),
                                 int(a.get("opset", self.opset))), yt)
