"""ONNX -> Synapse integer graph: ``import_onnx(model) -> Graph``.

Reads the two quantized ONNX formats (docs/onnx_import.md has the op table and
every rule): QOperator (QLinearConv, QLinearMatMul, QGemm, ... carry their own
scales) and QDQ (DequantizeLinear -> float op -> QuantizeLinear groups). One
walk over the nodes, in topological order, gives every ONNX tensor a value
(values.py) that says what it is to Synapse:

  Const    a constant: initializer, Constant, or a folded shape computation
  Int      an int8 tensor of the integer graph (uint8 codes shifted by -128)
  Deq      DequantizeLinear of an Int: a float that is still exactly s * (q - z)
  QConst   DequantizeLinear of a constant: weights and biases, kept integer
  Pending  a float op on Deq inputs waiting for the QuantizeLinear that gives its
           output scale; it then becomes ONE integer node (Relu/Clip in between
           become its output clamp)
  Acc      the int32 output of ConvInteger/MatMulInteger waiting for its scale

Ops that commute with DequantizeLinear (max pool, relu, clip, reshapes, pad)
run on the int8 codes directly and keep the Deq. Whatever has no integer form
(a chain of float ops, a float weight, a batch-dependent shape) raises a
SynapseError naming the node, the op and what to do.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from onnx import TensorProto, helper, version_converter

from .. import build
from ..errors import (DtypeError, ModelFormatError, OnnxImportError, ShapeError, SynapseError,
                      UnsupportedOpError)
from ..graph import BATCH, GraphBuilder
from ..reference import tables
from ..reference.softmax import softmax_params
from . import checks
from .checks import MAX_DIM, MAX_ELEMS, label, type_name
from .fold import FOLDABLE, fold, reshape_target
from .values import BATCH_SYM, Acc, Const, Deq, FloatIn, Int, Pending, QConst

OPSET_MIN, OPSET_MAX = 10, 28  # default domain, read natively
MS = "com.microsoft"
# Ops that commute with an elementwise monotone QuantizeLinear (run after a pending op).
_MONOTONE = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Pad"}
f32 = np.float32
_INT8_TYPES = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}


def import_onnx(model, *, name=None):
    """Import a quantized ONNX model (path, bytes or onnx.ModelProto) as a Synapse Graph.

    Axis 0 of every input is the batch (dynamic). uint8 tensors become int8
    (codes and zero points minus 128: the same real values). Raises
    ModelFormatError (malformed file), DtypeError, UnsupportedOpError or
    OnnxImportError (no integer form), each naming the node and op.
    """
    proto = checks.load_model(model)
    order = checks.check_structure(proto.graph)
    proto, order = _opset(proto, order)
    return _Importer(proto, order, name).run()


def _opset(proto, order):
    versions = {o.domain: o.version for o in proto.opset_import}
    v = versions.get("", versions.get("ai.onnx"))
    if v is None:
        raise ModelFormatError("the model imports no default-domain opset")
    if OPSET_MIN <= v <= OPSET_MAX:
        return proto, order
    target = 13 if v < OPSET_MIN else 21
    try:
        converted = version_converter.convert_version(proto, target)
    except Exception as e:  # the converter raises bare RuntimeErrors of many kinds
        raise OnnxImportError(
            f"opset {v} is outside the supported range {OPSET_MIN}..{OPSET_MAX} and "
            f"onnx.version_converter could not convert it to {target}: {e}") from None
    return converted, checks.check_structure(converted.graph)


def _q8(node, a, what):
    """int8 codes of an int8/uint8 array (uint8 shifted by -128)."""
    if a.dtype == np.int8:
        return a
    if a.dtype == np.uint8:
        return (a.astype(np.int16) - 128).astype(np.int8)
    raise DtypeError(f"node {label(node)!r} (op {node.op_type}): {what} has dtype {a.dtype}, "
                     "expected int8 or uint8")


def _onnx8(a):
    return _INT8_TYPES.get(a.dtype)


class _Importer:
    def __init__(self, proto, order, name):
        self.proto, self.g, self.order = proto, proto.graph, order
        versions = {o.domain: o.version for o in proto.opset_import}
        self.opset = versions.get("", versions.get("ai.onnx"))
        self.name = name
        self.b = GraphBuilder()
        self.values = {}
        self.inits = {t.name: t for t in self.g.initializer}
        self.batch_sizes = set()  # static axis-0 sizes of the inputs: the batch in Reshape targets
        self.boundary = {}  # float input -> its quantized graph input (the boundary quantize)
        self._reinterpreted = {}
        self._output_tensors = set()

    # ---- driver -----------------------------------------------------------------------------
    def run(self):
        self._inputs()
        passthrough = {i.name for i in self.g.input} & {o.name for o in self.g.output}
        if passthrough:
            raise OnnxImportError(f"graph outputs {sorted(passthrough)} are graph inputs: "
                                  "nothing to compute")
        for o in self.g.output:
            self.b.unique(o.name)  # reserved: the graph outputs keep their ONNX names
        for node in self.order:
            self._convert(node)
        outs = []
        for o in self.g.output:
            outs.append((o.name, self._output(o.name)))
            self._output_tensors.add(outs[-1][1])
        for onnx_name, t in outs:
            self._rename(t, onnx_name)
            self.b.add_output(onnx_name)
        producer = f"{self.proto.producer_name} {self.proto.producer_version}".strip()
        meta = {"source": "onnx", "onnx_opset": str(self.opset), "onnx_producer": producer,
                "name": self.name or self.g.name or "model"}
        return self.b.build(meta)

    def _convert(self, node):
        try:
            outs = self._dispatch(node)
        except SynapseError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError) as e:
            raise OnnxImportError(f"node {label(node)!r} (op {node.op_type}): cannot convert "
                                  f"({type(e).__name__}: {e})") from e
        for o, v in zip(node.output, outs):
            if o:
                self.values[o] = v

    def _dispatch(self, node):
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        if domain not in ("", MS):
            self._fail(node, f"domain {node.domain!r} is not supported", exc=UnsupportedOpError)
        ins = [self._in(node, i) for i in range(len(node.input))]
        constant = all(v is None or isinstance(v, Const) for v in ins)
        if domain == "" and node.op_type in FOLDABLE and constant and (
                ins or node.op_type == "Constant"):
            return [Const(np.asarray(a)) for a in
                    fold(node, [None if v is None else v.value for v in ins])]
        handler = getattr(self, f"_{'ms_' if domain else ''}{node.op_type}", None)
        if handler is None:
            self._fail(node, "has no Synapse integer implementation",
                       "docs/onnx_import.md lists the supported ops", UnsupportedOpError)
        if node.op_type in _MONOTONE and domain == "" and isinstance(ins[0], Pending):
            return [self._after_pending(node, ins[0], handler)]
        out = handler(node)
        if isinstance(out, (Int, Deq)) and self._per_sample(out.t) > MAX_ELEMS:
            self._fail(node, f"output shape {list(self.b.shapes[out.t])} exceeds the limit of "
                             f"{MAX_ELEMS} elements per sample", exc=ModelFormatError)
        return out if isinstance(out, list) else [out]

    # ---- helpers ----------------------------------------------------------------------------
    def _fail(self, node, msg, hint=None, exc=OnnxImportError):
        raise exc(f"node {label(node)!r} (op {node.op_type}): {msg}"
                  + (f"; hint: {hint}" if hint else ""))

    def _per_sample(self, t):
        return math.prod(self.b.shapes[t][1:])

    def _value(self, name):
        if name not in self.values:
            self.values[name] = Const(checks.to_array(self.inits[name], "initializer"))
        return self.values[name]

    def _in(self, node, i):
        if i >= len(node.input) or not node.input[i]:
            return None
        return self._value(node.input[i])

    def _attrs(self, node):
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in a.items()}

    def _const(self, node, i, what, required=True):
        v = self._in(node, i)
        if v is None:
            if required:
                self._fail(node, f"{what} (input {i}) is missing", exc=ModelFormatError)
            return None
        if not isinstance(v, Const):
            self._fail(node, f"{what} (input {i}) must be a constant, got {_kind(v)}",
                       "Synapse bakes parameters into the model: make it an initializer")
        return v.value

    def _scale(self, node, i, per_tensor=True, what="scale"):
        s = self._const(node, i, what)
        if s.dtype not in (np.float32, np.float16):
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): {what} has dtype "
                             f"{s.dtype}, expected float32")
        s = s.astype(np.float32)  # float16 -> float32 is exact
        if per_tensor and s.size != 1 or s.ndim > 1:
            self._fail(node, f"{what} of shape {list(s.shape)}: only "
                             f"{'per-tensor' if per_tensor else 'per-tensor or per-axis (1-D)'} "
                             "scales are supported", exc=UnsupportedOpError)
        if not (np.isfinite(s) & (s > 0)).all():
            self._fail(node, f"{what} must be positive and finite", exc=ModelFormatError)
        return s.reshape(()) if per_tensor or s.size == 1 else s

    def _zero_point(self, node, i, default_type, shape=()):
        """(zero point in the int8 domain as int64, its ONNX type)."""
        z = self._const(node, i, "zero point", required=False)
        if z is None:  # ONNX's default is 0 of the tensor's type: uint8 0 is int8 -128
            return np.full(shape, -128 if default_type == TensorProto.UINT8 else 0, np.int64), \
                default_type
        t = _onnx8(z)
        if t is None:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): zero point has dtype "
                             f"{z.dtype}, expected int8 or uint8")
        if z.size != math.prod(shape):
            self._fail(node, f"zero point of shape {list(z.shape)} does not match its scale "
                             f"{list(shape)}", exc=ModelFormatError)
        return _q8(node, z, "zero point").astype(np.int64).reshape(shape), t

    def _as(self, t, s, z):
        """t with quantization (s, z): the same int8 codes, reinterpreted if needed."""
        key = (float(f32(s)), int(z))
        if self.b.quant[t] == key:
            return t
        if (t, key) not in self._reinterpreted:
            self._reinterpreted[(t, key)] = self.b.add_node("identity", [t], name=f"{t}.as",
                                                            out_quant=key)
        return self._reinterpreted[(t, key)]

    def _qin(self, node, i):
        """Quantized activation input i, its scale and zero point at i+1, i+2 (QOperator)."""
        v = self._in(node, i)
        if not isinstance(v, Int):
            self._fail(node, f"input {i} must be a quantized (int8/uint8) tensor, got {_kind(v)}")
        s = self._scale(node, i + 1)
        z, zt = self._zero_point(node, i + 2, v.dtype)
        if zt != v.dtype:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): input {i} is "
                             f"{type_name(v.dtype)} but its zero point is {type_name(zt)}")
        return self._as(v.t, s, int(z))

    def _yparams(self, node, si, zi, default_type=TensorProto.UINT8):
        s = self._scale(node, si)
        z, zt = self._zero_point(node, zi, default_type)
        return float(s), int(z), zt

    def _deq(self, node, i):
        v = self._in(node, i)
        if not isinstance(v, Deq):
            self._fail(node, f"input {i} must come from a DequantizeLinear of a quantized "
                             f"activation, got {_kind(v)}",
                       "quantize the model (QDQ) so that every float op input is dequantized")
        return v

    def _deq_t(self, v):
        return self._as(v.t, v.scale, v.zp)

    def _weights(self, node, v, axis, channels, what="weight"):
        """(int8 codes, float32 scale (channels,), int64 zero point (channels,)) of a QConst."""
        if isinstance(v, Const):
            kind = "float" if v.value.dtype.kind == "f" else str(v.value.dtype)
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): {what} is a {kind} "
                             "constant without quantization; expected DequantizeLinear of an "
                             "int8 initializer (hint: quantize weights, e.g. quantize_static)")
        if not isinstance(v, QConst) or v.q.dtype != np.int8:
            self._fail(node, f"{what} must be DequantizeLinear of an int8/uint8 initializer, got "
                             f"{_kind(v)}")
        return self._channel_params(node, v.q, v.scale, v.zp, v.axis, axis, channels, what)

    def _channel_params(self, node, q, s, z, axis, want_axis, channels, what):
        if s.ndim and (axis % q.ndim) != want_axis % q.ndim:
            self._fail(node, f"{what} is quantized per axis {axis}; only per-tensor or per output "
                             f"channel (axis {want_axis}) is supported", exc=UnsupportedOpError)
        s = np.broadcast_to(s, (channels,)).astype(np.float32)
        z = np.broadcast_to(z, (channels,)).astype(np.int64)
        return q, s, z

    def _qoperator_weights(self, node, w, si, zi, axis):
        """(int8 codes, scale, zero point per output channel) of weights w (an array) whose
        scale and zero point are inputs si, zi."""
        if _onnx8(w) is None:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): weight has dtype "
                             f"{w.dtype}, expected int8 or uint8")
        channels = w.shape[axis] if w.ndim else 1
        s = self._scale(node, si, per_tensor=False)
        z, zt = self._zero_point(node, zi, _onnx8(w), s.shape)
        if zt != _onnx8(w):
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): weight is {w.dtype} but "
                             f"its zero point is {type_name(zt)}")
        if s.ndim and s.size not in (1, channels):
            self._fail(node, f"weight scale has {s.size} entries for {channels} output channels",
                       exc=ModelFormatError)
        return self._channel_params(node, _q8(node, w, "weight"), s, z, axis, axis, channels,
                                    "weight")

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
            self._fail(node, f"bias must be a constant of {channels} values, got {_kind(v)}")
        real = np.broadcast_to(real.reshape(-1).astype(np.float64) * beta, (channels,))
        return build.quantize_bias(real, f32(1), unit)

    def _pads(self, node, a, nd):
        auto = a.get("auto_pad", "NOTSET")
        if auto in ("NOTSET", ""):
            pads = [int(p) for p in a.get("pads", [0] * (2 * nd))]
            if len(pads) != 2 * nd or min(pads, default=0) < 0:
                self._fail(node, f"pads {pads} must be {2 * nd} non-negative values",
                           exc=ModelFormatError)
            return pads
        if auto == "VALID":
            return [0] * (2 * nd)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            return auto.lower()
        self._fail(node, f"auto_pad {auto!r} is not an ONNX value", exc=ModelFormatError)

    def _spatial_attrs(self, node, a, nd, kernel):
        strides = [int(v) for v in a.get("strides", [1] * nd)]
        dil = [int(v) for v in a.get("dilations", [1] * nd)]
        if "kernel_shape" in a and [int(v) for v in a["kernel_shape"]] != list(kernel):
            self._fail(node, f"kernel_shape {a['kernel_shape']} != weight shape {list(kernel)}",
                       exc=ModelFormatError)
        if len(strides) != nd or len(dil) != nd or min(strides + dil, default=1) < 1:
            self._fail(node, f"strides {strides} / dilations {dil} must be {nd} positive values",
                       exc=ModelFormatError)
        return strides, dil

    def _clamp(self, ys, yz, lo, hi):
        """Real clamp bounds quantized with the output scale: Q is monotone, so
        Q(clip(v, lo, hi)) = clip(Q(v), Q(lo), Q(hi)) exactly."""
        def q(v):
            return int(np.clip(np.rint(f32(v) / f32(ys)) + yz, -128, 127))
        return (-128 if lo is None else q(lo)), (127 if hi is None else q(hi))

    def _clip(self, t, qmin, qmax, node):
        if (qmin, qmax) == (-128, 127):
            return t
        return self.b.add_node("clip", [t], attrs=dict(qmin=qmin, qmax=qmax),
                               name=f"{label(node)}.clip", out_quant=self.b.quant[t])

    # ---- the batch-keeping shape rules -------------------------------------------------------
    def _sample_shape(self, node, t, target, allowzero=0):
        """Per-sample target shape of a Reshape of tensor t (axis 0 must stay the batch)."""
        target = [int(v) for v in np.asarray(target).reshape(-1)]
        first = target[0] if target else None
        if first not in (BATCH_SYM, 0, -1) and first not in self.batch_sizes:
            self._fail(node, f"target shape {target} does not keep axis 0 as the batch",
                       "Synapse runs any batch size: reshape per sample, e.g. [0, -1] or [-1, ...]",
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
            self._fail(node, f"input 0 is {_kind(v)}; this op runs on quantized tensors only",
                       "quantize the op's input (QDQ) or fold the op")
        return v, v.t

    # ---- inputs and outputs ------------------------------------------------------------------
    def _inputs(self):
        consumers = {}
        for n in self.order:
            for k, i in enumerate(n.input):
                consumers.setdefault(i, []).append((n, k))
        for gi in self.g.input:
            if gi.name in self.inits or gi.name not in consumers:
                continue
            tt = gi.type.tensor_type
            shape = self._input_shape(gi)
            if tt.elem_type == TensorProto.FLOAT:
                s, z, zt = self._boundary_params(gi.name, consumers[gi.name])
                self.boundary[gi.name] = self.b.add_input(gi.name, shape, s, z)
                self.values[gi.name] = FloatIn(gi.name, shape)
            elif tt.elem_type in (TensorProto.INT8, TensorProto.UINT8):
                s, z = self._int_input_params(gi.name, tt.elem_type, consumers)
                self.values[gi.name] = Int(self.b.add_input(gi.name, shape, s, z), tt.elem_type)
            else:
                raise DtypeError(f"graph input {gi.name!r} has type {type_name(tt.elem_type)}; "
                                 "Synapse inputs are float32 (quantized at the boundary) or "
                                 "int8/uint8")

    def _input_shape(self, gi):
        tt = gi.type.tensor_type
        if not tt.HasField("shape") or not tt.shape.dim:
            raise OnnxImportError(f"graph input {gi.name!r} has no declared shape; Synapse needs "
                                  "(batch, static dims...)")
        dims = []
        for k, d in enumerate(tt.shape.dim):
            v = d.dim_value if d.HasField("dim_value") else None
            if k == 0:
                if v:
                    self.batch_sizes.add(v)
                dims.append(BATCH)
            elif v is None or v <= 0:
                raise OnnxImportError(f"graph input {gi.name!r}: axis {k} is "
                                      f"{d.dim_param or v!r}; only axis 0 (the batch) may be "
                                      "dynamic and every dim must be positive (fix the shape "
                                      "with onnx.tools.update_model_dims)")
            else:
                dims.append(v)
        if max(dims[1:], default=0) > MAX_DIM or math.prod(dims[1:]) > MAX_ELEMS:
            raise ModelFormatError(f"graph input {gi.name!r}: {dims[1:]} per sample exceeds the "
                                   f"limit of {MAX_ELEMS} elements")
        return tuple(dims)

    def _boundary_params(self, name, uses):
        """The scale/zero point of the QuantizeLinear nodes that read a float input."""
        found = None
        for n, k in uses:
            if n.op_type != "QuantizeLinear" or k != 0:
                raise OnnxImportError(
                    f"float graph input {name!r} is read by node {label(n)!r} (op {n.op_type}); "
                    "Synapse quantizes inputs at the boundary, so a float input may only feed "
                    "QuantizeLinear (hint: quantize the model, e.g. quantize_static)")
            s, z, zt = self._yparams(n, 1, 2, self._q_output_type(n))
            if found is not None and found != (s, z, zt):
                raise OnnxImportError(f"float graph input {name!r} is quantized with two "
                                      f"different scales/zero points ({found[:2]} and {(s, z)})")
            found = (s, z, zt)
        return found

    # op -> {input index: index of its scale (the zero point follows)}
    _INPUT_PARAMS = {"DequantizeLinear": {0: 1}, "QLinearConv": {0: 1},
                     "QLinearMatMul": {0: 1, 3: 4}, "QGemm": {0: 1, 3: 4},
                     "QLinearAdd": {0: 1, 3: 4}, "QLinearMul": {0: 1, 3: 4},
                     "QLinearSigmoid": {0: 1}, "QLinearLeakyRelu": {0: 1}, "QLinearSoftmax": {0: 1},
                     "QLinearGlobalAveragePool": {0: 1}, "QLinearAveragePool": {0: 1}}

    def _int_input_params(self, name, elem_type, consumers):
        """An int8/uint8 input takes its scale/zero point from the first node that states
        them, looking through the ops that keep a tensor's quantization (max pool, reshapes)."""
        uses, seen = list(consumers[name]), set()
        while uses:
            n, k = uses.pop(0)
            if n.op_type in _MONOTONE | {"Identity", "Relu", "Clip"} and k == 0 and \
                    n.output[0] not in seen:
                seen.add(n.output[0])
                uses += consumers.get(n.output[0], [])
                continue
            if n.op_type == "QLinearConcat" and k >= 2 and (k - 2) % 3 == 0:
                si = k + 1
            elif n.op_type in ("ConvInteger", "MatMulInteger") and k == 0:
                z, zt = self._zero_point(n, 2, elem_type)
                return 1.0, int(z)
            else:
                si = self._INPUT_PARAMS.get(n.op_type, {}).get(k)
            if si is not None:
                s, z, zt = self._yparams(n, si, si + 1, elem_type)
                if zt != elem_type:
                    raise DtypeError(f"node {label(n)!r} (op {n.op_type}): input {name!r} is "
                                     f"{type_name(elem_type)} but its zero point is "
                                     f"{type_name(zt)}")
                return s, z
        raise OnnxImportError(f"int8 graph input {name!r}: no node states its scale and zero "
                              "point (feed it to a DequantizeLinear or a QLinear op)")

    def _output(self, name):
        v = self.values[name] if name in self.values else self._value(name)
        if isinstance(v, Deq):
            t = self._deq_t(v)
        elif isinstance(v, Int):
            t = v.t
        else:
            raise OnnxImportError(
                f"graph output {name!r} is {_kind(v)}; a Synapse output is an int8 tensor, "
                "optionally dequantized (hint: end the model with QuantizeLinear -> "
                "DequantizeLinear)")
        if t in {x.name for x in self.b.inputs} or t in self._output_tensors:
            t = self.b.add_node("identity", [t], name=f"{name}.copy", out_quant=self.b.quant[t])
        return t

    def _rename(self, old, new):
        """Give the builder tensor `old` the reserved graph output name `new`."""
        if old == new:
            return
        for n in self.b.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
            n.outputs = [new if o == old else o for o in n.outputs]
        self.b.quant[new] = self.b.quant.pop(old)
        self.b.shapes[new] = self.b.shapes.pop(old)
        self._reinterpreted = {k: (new if v == old else v) for k, v in self._reinterpreted.items()}

    # ---- QuantizeLinear / DequantizeLinear ---------------------------------------------------
    def _q_output_type(self, node):
        a = self._attrs(node)
        z = self._in(node, 2)
        if isinstance(z, Const):
            return _onnx8(z.value)  # None for other types: _zero_point rejects them
        return int(a.get("output_dtype", 0)) or TensorProto.UINT8

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
        self._fail(node, f"its input is {_kind(x)}, which has no integer form",
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
            elif _onnx8(q) is not None:
                s = self._scale(node, 1, per_tensor=False)
                z, zt = self._zero_point(node, 2, _onnx8(q), s.shape)
                if zt != _onnx8(q):
                    raise DtypeError(f"node {label(node)!r} (op {node.op_type}): a {q.dtype} "
                                     f"tensor with a {type_name(zt)} zero point")
                q = _q8(node, q, "input")
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
        self._fail(node, f"dequantizes {_kind(x)}", "DequantizeLinear reads an int8/uint8 "
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

    def _relu_or_clip(self, yz, qmin, qmax, node):
        """(relu flag, clip after) for helpers that fuse only a ReLU."""
        relu = qmin == max(-128, yz) and qmin > -128 and qmax == 127
        return relu, (lambda y: y if relu else self._clip(y, qmin, qmax, node))

    def _conv(self, node, x, wq, ws, wz, bias, ys, yz, qmin, qmax):
        a = self._attrs(node)
        nd = wq.ndim - 2
        if nd < 1 or len(self.b.shapes[x]) != wq.ndim:
            self._fail(node, f"input {list(self.b.shapes[x])} and weight {list(wq.shape)} do not "
                             "make a 1-D, 2-D or 3-D convolution", exc=ShapeError)
        strides, dil = self._spatial_attrs(node, a, nd, wq.shape[2:])
        return build.conv(self.b, x, wq, ws, bias, y_scale=ys, y_zero_point=yz, w_zero_point=wz,
                          strides=strides, pads=self._pads(node, a, nd), dilations=dil,
                          group=int(a.get("group", 1)), qmin=qmin, qmax=qmax, name=label(node))

    def _dense(self, node, x, wq, ws, wz, bias, ys, yz, qmin, qmax, trans_w, alpha=None):
        relu, after = self._relu_or_clip(yz, qmin, qmax, node)
        return after(build.dense(self.b, x, wq, ws, bias, y_scale=ys, y_zero_point=yz,
                                 w_zero_point=wz, trans_w=trans_w, relu=relu, alpha=alpha,
                                 name=label(node)))

    # ---- QOperator ops -----------------------------------------------------------------------
    def _QLinearConv(self, node):
        x = self._qin(node, 0)
        wq, ws, wz = self._qoperator_weights(node, self._const(node, 3, "weight"), 4, 5, axis=0)
        ys, yz, yt = self._yparams(node, 6, 7, self._in_type(node, 0))
        bias = self._int32_bias(node, 8, wq.shape[0])
        return Int(self._conv(node, x, wq, ws, wz, bias, ys, yz, -128, 127), yt)

    def _in_type(self, node, i):
        v = self._in(node, i)
        return v.dtype if isinstance(v, Int) else TensorProto.UINT8

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
            self._fail(node, f"input 0 must be a quantized tensor, got {_kind(x)}")
        zx, zt = self._zero_point(node, 2, x.dtype)
        if zt != x.dtype:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): input 0 is "
                             f"{type_name(x.dtype)} but its zero point is {type_name(zt)}")
        w = self._const(node, 1, "weight")
        if _onnx8(w) is None or w.ndim < 2:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): weight of dtype {w.dtype}"
                             f" and shape {list(w.shape)}; expected int8/uint8 with rank >= 2")
        zw = self._const(node, 3, "weight zero point", required=False)
        wz, _ = self._zero_point(node, 3, _onnx8(w), () if zw is None else zw.shape)
        channels = w.shape[axis]
        return (self._as(x.t, 1.0, int(zx)), _q8(node, w, "weight"),
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
        if isinstance(self._in(node, 3), Const):
            self._fail(node, "a constant operand has no Synapse op", "feed it as an activation",
                       UnsupportedOpError)
        a, c = self._qin(node, 0), self._qin(node, 3)
        ys, yz, yt = self._yparams(node, 6, 7, self._in_type(node, 0))
        return Int(helper_fn(self.b, a, c, y_scale=ys, y_zero_point=yz, name=label(node)), yt)

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

    def _avg_pool(self, node, x, ys, yz):
        a = self._attrs(node)
        kernel = [int(v) for v in a["kernel_shape"]]
        nd = len(kernel)
        if any(int(d) != 1 for d in a.get("dilations", [])):
            self._fail(node, "dilated average pooling is not supported", exc=UnsupportedOpError)
        strides, _ = self._spatial_attrs(node, {"strides": a.get("strides", [1] * nd)}, nd, kernel)
        return build.avg_pool(self.b, x, kernel, strides, self._pads(node, a, nd),
                              int(a.get("count_include_pad", 0)), int(a.get("ceil_mode", 0)),
                              y_scale=ys, y_zero_point=yz, name=label(node))

    def _ms_QLinearConcat(self, node):
        ys, yz, yt = self._yparams(node, 0, 1)
        if (len(node.input) - 2) % 3 or len(node.input) < 5:
            self._fail(node, "inputs must be (Y_scale, Y_zero_point, then X, scale, zero point "
                             "per input)", exc=ModelFormatError)
        xs = [self._qin(node, i) for i in range(2, len(node.input), 3)]
        return Int(build.concat(self.b, xs, int(self._attrs(node)["axis"]), y_scale=ys,
                                y_zero_point=yz, name=label(node)), yt)

    def _lut(self, node, x, ys, yz, fn):
        """A 256-entry table of Q(fn(DQ(code))), built once (reference/tables.py)."""
        s_x, z_x = self.b.quant[x]
        if fn == "sigmoid":
            table = tables.sigmoid_table(s_x, z_x, ys, yz)
        elif fn == "tanh":
            table = tables.tanh_table(s_x, z_x, ys, yz)
        else:
            alpha = float(self._attrs(node).get("alpha", 0.01))
            table = tables.leaky_relu_table(alpha, s_x, z_x, ys, yz)
        return build.lut(self.b, x, table, fn, y_scale=ys, y_zero_point=yz, name=label(node))

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

    def _softmax(self, node, x, ys, yz, axis, opset):
        """Softmax along `axis`; before opset 13 ONNX flattens [axis:] into one axis first."""
        shape = self.b.shapes[x]
        axis = axis + len(shape) if axis < 0 else axis
        if not 1 <= axis < len(shape):
            self._fail(node, f"softmax over axis {axis} of {list(shape)} mixes samples",
                       exc=UnsupportedOpError)
        flat = opset < 13 and axis != len(shape) - 1
        if flat:
            x = build.reshape(self.b, x, [*shape[1:axis], math.prod(shape[axis:])],
                              name=f"{label(node)}.flat")
        s_x, _ = self.b.quant[x]
        p = softmax_params(s_x, ys, yz)
        y = self.b.add_node("softmax", [x], attrs=dict(
            axis=-1 if flat else axis, y_inv_scale=p["y_inv_scale"],
            y_zero_point=p["y_zero_point"]),
            params=dict(exp_table=p["exp_table"]), name=label(node), out_quant=(ys, yz))
        if flat:
            y = build.reshape(self.b, y, list(shape[1:]), name=f"{label(node)}.unflat")
        return y

    # ---- ops on int8 tensors that also commute with DequantizeLinear --------------------------
    def _Identity(self, node):
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
        self._fail(node, f"its input is {_kind(v)}")

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
        self._fail(node, f"its input is {_kind(v)}")

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
        self._fail(node, f"inputs are {sorted({_kind(v) for v in vs})}; a concat needs all "
                         "inputs quantized")

    def _Shape(self, node):
        v = self._in(node, 0)
        if isinstance(v, FloatIn):
            shape = v.shape
        elif isinstance(v, (Int, Deq)):
            shape = self.b.shapes[v.t]
        else:
            self._fail(node, f"shape of {_kind(v)}")
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
        self._fail(node, f"cast of {_kind(v)} to {type_name(to)} has no integer form",
                   exc=UnsupportedOpError)

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
        if len(vs) > 2:
            self._fail(node, f"{len(vs)} inputs: only 2 (a single rounding) are supported",
                       "split it into Add nodes, each quantized", UnsupportedOpError)
        return self._add(node, vs)

    def _add(self, node, vs):
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
        self._fail(node, f"adds {' and '.join(_kind(v) for v in vs)}",
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

    def _Mul(self, node):
        vs = [self._in(node, i) for i in range(2)]
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
        self._fail(node, f"multiplies {' and '.join(_kind(v) for v in vs)}",
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
        self._fail(node, f"{what} (input {i}) must be a float constant, got {_kind(v)}")

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


def _kind(v):
    """What a value is, for error messages."""
    return {Const: "a constant", Int: "a quantized tensor", Deq: "a dequantized tensor",
            QConst: "a dequantized constant", FloatIn: "a float graph input",
            Pending: "the float output of node {!r} ({})", Acc: "an int32 accumulator",
            type(None): "missing"}[type(v)].format(
        *((label(v.node), v.node.op_type) if isinstance(v, Pending) else ()))
