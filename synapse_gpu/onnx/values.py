"""What an ONNX tensor is to the importer (see importer.py's docstring), how a value
is named in error messages, and the uint8 -> int8 code rule the op modules share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from onnx import TensorProto

from ..errors import DtypeError, ModelFormatError, UnsupportedOpError
from .checks import label

# A batch size in a folded shape computation (Shape of an activation): it may be
# copied, gathered, concatenated, but never used in arithmetic.
BATCH_SYM = -(1 << 62)
_INT8_TYPES = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}


@dataclass
class Const:
    """A constant: initializer, Constant node, or a folded computation (original dtype)."""

    value: np.ndarray


@dataclass
class Int:
    """An int8 tensor of the integer graph; its scale/zero point are builder.quant[t].

    dtype is the ONNX type it had (INT8 or UINT8): raw integer ops (Relu, Clip,
    Pad values on a quantized tensor) depend on it, since uint8 codes are shifted.
    """

    t: str
    dtype: int = TensorProto.INT8


@dataclass
class Deq:
    """DequantizeLinear(Int): a float tensor that is exactly s * (q - z) for int8 q."""

    t: str
    scale: float
    zp: int


@dataclass
class QConst:
    """DequantizeLinear(constant): weights or bias, kept as integers + quantization."""

    q: np.ndarray  # int8 (8-bit codes, uint8 shifted) or int32
    scale: np.ndarray  # float32, () or (n,)
    zp: np.ndarray  # int64, shaped like scale (int8 domain)
    axis: int

    def real(self):
        """The float32 values DequantizeLinear gives: f32(f32(q - z) * s)."""
        shape = [1] * self.q.ndim
        if self.scale.ndim:
            shape[self.axis] = -1
        d = (self.q.astype(np.int64) - self.zp.reshape(shape)).astype(np.float32)
        return d * self.scale.reshape(shape)


@dataclass
class FloatIn:
    """A float graph input before its QuantizeLinear (the boundary quantize)."""

    name: str
    shape: tuple


@dataclass
class Pending:
    """A float op on Deq inputs, waiting for the QuantizeLinear that gives its output
    scale. emit(y_scale, y_zp, qmin, qmax) adds the integer node(s) and returns the
    tensor. lo/hi: real clamp bounds of a Relu/Clip that followed the op."""

    node: object
    emit: Callable
    lo: float | None = None
    hi: float | None = None
    done: dict = field(default_factory=dict)  # (scale, zp, lo, hi) -> tensor


@dataclass
class Acc:
    """The int32 accumulator of ConvInteger/MatMulInteger, before its rescale.

    The ONNX chain that follows (Cast to float, Mul by the scale, Add a float
    bias, Relu/Clip, QuantizeLinear) is collected here and emitted as ONE conv or
    dense node: emit(scale_c, bias, y_scale, y_zp, qmin, qmax) -> tensor.
    """

    node: object
    emit: Callable
    channels: int
    rank: int  # of the accumulator tensor
    axis: int  # its channel axis: 1 for conv, the last for matmul
    scale: np.ndarray | None = None  # float32 per output channel
    bias: np.ndarray | None = None  # float32 per output channel, real units
    lo: float | None = None
    hi: float | None = None


def int8_codes(node, a, what):
    """int8 codes of an int8/uint8 array (uint8 shifted by -128)."""
    if a.dtype == np.int8:
        return a
    if a.dtype == np.uint8:
        return (a.astype(np.int16) - 128).astype(np.int8)
    raise DtypeError(f"node {label(node)!r} (op {node.op_type}): {what} has dtype {a.dtype}, "
                     "expected int8 or uint8")


def int8_onnx_type(a):
    """TensorProto.INT8 or UINT8 for an int8/uint8 array, else None."""
    return _INT8_TYPES.get(a.dtype)


def describe(v):
    """What a value is, for error messages."""
    return {Const: "a constant", Int: "a quantized tensor", Deq: "a dequantized tensor",
            QConst: "a dequantized constant", FloatIn: "a float graph input",
            Pending: "the float output of node {!r} ({})", Acc: "an int32 accumulator",
            type(None): "missing"}[type(v)].format(
        *((label(v.node), v.node.op_type) if isinstance(v, Pending) else ()))


def per_channel(shape, rank):
    """Whether a constant of `shape`, broadcast against a rank-`rank` activation, holds one
    value per channel (only axis 1 varies): the affine (batchnorm) rule's case."""
    return [i for i, d in enumerate((1,) * (rank - len(shape)) + tuple(shape)) if d != 1] == [1]


def constant_node(imp, node, x, q, scale, zp):
    """int8 codes q (quantization scale, zp) as a `constant` node: repeated for each sample
    of activation x, so that Add/Mul become the two-tensor rule (onnxruntime's QLinearAdd /
    QLinearMul bit for bit). q keeps its own per-sample shape; add/mul broadcast it."""
    shape = imp.b.shapes[x]
    full = (1,) * (len(shape) - q.ndim) + q.shape
    if q.ndim <= len(shape) and full[0] != 1:
        imp._fail(node, f"a constant operand of shape {list(q.shape)} varies along axis 0, "
                        "the batch", exc=UnsupportedOpError)
    if q.ndim > len(shape) or any(c not in (1, d) for c, d in zip(full[1:], shape[1:])):
        imp._fail(node, f"a constant operand of shape {list(q.shape)} does not broadcast to "
                        f"{list(shape)}", exc=ModelFormatError)
    return imp.b.add_node("constant", [x], params=dict(value=q.reshape(full[1:])),
                          name=f"{label(node)}.constant", out_quant=(float(scale), int(zp)))
