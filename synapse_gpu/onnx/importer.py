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

The code: this module holds the walk (each node goes to the handler method
`_<op_type>`, or `_ms_<op_type>` for com.microsoft), the value of every tensor,
the graph's boundary inputs and outputs, and the helpers the handlers share
(scales, zero points, weights, pads; the conv, dense, pool, LUT and softmax nodes
both formats emit). The handlers are mixins the importer class inherits:

  qoperator.py  QOperator ops: QLinear*, com.microsoft Q*, ConvInteger, MatMulInteger
  qdq.py        QuantizeLinear/DequantizeLinear and the float ops of DQ -> op -> Q groups
  int8_ops.py   ops that run on the int8 codes: MaxPool, Relu, Clip, the reshapes, Pad, Concat
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper, version_converter

from .. import build
from ..errors import (DtypeError, ModelFormatError, OnnxImportError, ShapeError, SynapseError,
                      UnsupportedOpError)
from ..graph import BATCH, GraphBuilder
from ..reference import tables
from ..reference.softmax import softmax_params
from . import (batch_views, checks, const_concat, conv_transpose, islands, layernorm, lrn,
               movement, reduce, refusals, unary)
from .checks import MAX_DIM, MAX_ELEMS, label, type_name
from .fold import FOLDABLE, fold
from .int8_ops import Int8Ops
from .qdq import QDQOps
from .qoperator import QOperatorOps
from .attention import AttentionOps
from .tokens import ID_TYPES, TokenOps
from .values import Const, Deq, FloatIn, Int, Pending, describe, int8_codes, int8_onnx_type

OPSET_MIN, OPSET_MAX = 10, 28  # default domain, read natively
MS = "com.microsoft"
# Ops that commute with an elementwise monotone QuantizeLinear (run after a pending op).
_MONOTONE = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
             "Pad"} | movement.MOVE_OPS
f32 = np.float32


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
    refusals.refuse(order)
    order = layernorm.fuse_decomposed(proto, order)
    order = unary.fuse_functions(proto, order, _Importer.has_rule)
    order, inferred = islands.quantize_islands(proto, order, _Importer.has_rule)
    return _Importer(proto, order, name, inferred).run()


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


class _Importer(batch_views.BatchViews, const_concat.ConstConcatOps, AttentionOps,
                QOperatorOps, QDQOps, Int8Ops, unary.UnaryOps, reduce.ReduceOps, TokenOps,
                movement.MovementOps, lrn.LrnOps, layernorm.LayerNormOps,
                conv_transpose.ConvTransposeOps):
    """One import: the walk, the values, the boundary; the op handlers are the mixins'."""

    @classmethod
    def has_rule(cls, node):
        """Whether the walk has a handler for this node (the island pass asks)."""
        ms = node.domain not in ("", "ai.onnx")
        return hasattr(cls, f"_{'ms_' if ms else ''}{node.op_type}")

    def __init__(self, proto, order, name, inferred=()):
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
        self.inferred = list(inferred)  # island quantizations (islands.py), for the metadata

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
        if self.inferred:
            meta["inferred_quantization"] = "; ".join(str(i) for i in self.inferred)
        if self.views:  # for compare: onnxruntime's tensor is Synapse's in another layout
            meta[batch_views.METADATA_KEY] = batch_views.to_metadata(self.views)
        return self.b.build(meta)

    def _convert(self, node):
        try:
            outs = self._view_dispatch(node)  # _dispatch, batch views checked
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
                       islands.unsupported_hint(node), UnsupportedOpError)
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
            if name not in self.inits:  # e.g. a graph input where a constant (a scale) belongs
                raise OnnxImportError(f"tensor {name!r} is read as a constant but is no initializer")
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
            self._fail(node, f"{what} (input {i}) must be a constant, got {describe(v)}",
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
        t = int8_onnx_type(z)
        if t is None:
            raise DtypeError(f"node {label(node)!r} (op {node.op_type}): zero point has dtype "
                             f"{z.dtype}, expected int8 or uint8")
        if z.size != math.prod(shape):
            self._fail(node, f"zero point of shape {list(z.shape)} does not match its scale "
                             f"{list(shape)}", exc=ModelFormatError)
        return int8_codes(node, z, "zero point").astype(np.int64).reshape(shape), t

    def _q_output_type(self, node):
        a = self._attrs(node)
        z = self._in(node, 2)
        if isinstance(z, Const):
            return int8_onnx_type(z.value)  # None for other types: _zero_point rejects them
        return int(a.get("output_dtype", 0)) or TensorProto.UINT8

    def _yparams(self, node, si, zi, default_type=TensorProto.UINT8):
        s = self._scale(node, si)
        z, zt = self._zero_point(node, zi, default_type)
        return float(s), int(z), zt

    def _as(self, t, s, z):
        """t with quantization (s, z): the same int8 codes, reinterpreted if needed."""
        key = (float(f32(s)), int(z))
        if self.b.quant[t] == key:
            return t
        if (t, key) not in self._reinterpreted:
            self._reinterpreted[(t, key)] = self.b.add_node("identity", [t], name=f"{t}.as",
                                                            out_quant=key)
        return self._reinterpreted[(t, key)]

    def _deq_t(self, v):
        return self._as(v.t, v.scale, v.zp)

    def _channel_params(self, node, q, s, z, axis, want_axis, channels, what):
        if s.ndim and (axis % q.ndim) != want_axis % q.ndim:
            self._fail(node, f"{what} is quantized per axis {axis}; only per-tensor or per output "
                             f"channel (axis {want_axis}) is supported", exc=UnsupportedOpError)
        s = np.broadcast_to(s, (channels,)).astype(np.float32)
        z = np.broadcast_to(z, (channels,)).astype(np.int64)
        return q, s, z

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

    # ---- integer nodes both formats emit -----------------------------------------------------
    def _clip(self, t, qmin, qmax, node):
        if (qmin, qmax) == (-128, 127):
            return t
        return self.b.add_node("clip", [t], attrs=dict(qmin=qmin, qmax=qmax),
                               name=f"{label(node)}.clip", out_quant=self.b.quant[t])

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

    # ---- inputs and outputs ------------------------------------------------------------------
    def _inputs(self):
        # tensor -> its readers (node, input index); kept for rules that look ahead (tokens.py)
        self.consumers = consumers = {}
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
            elif tt.elem_type in ID_TYPES:
                self.values[gi.name] = self._token_input(gi.name, shape, consumers[gi.name])
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
                f"graph output {name!r} is {describe(v)}; a Synapse output is an int8 tensor, "
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
