"""The float-island pass: quantize what the quantizer left in float, before the walk.

onnxruntime's quantize_static leaves some ops in float between quantized regions (a
residual Sum and the Relu after it, a BatchNormalization after a Concat, a Softmax
after the last DequantizeLinear, a Flatten before the first QuantizeLinear). A float
island is a connected region of such ops: its inputs are DequantizeLinear outputs or
float graph inputs, its outputs go to QuantizeLinear nodes or are graph outputs.

The walk (importer.py) already lowers one float op between a DequantizeLinear and a
QuantizeLinear (a "QDQ group"). This pass makes every island a chain of such groups:
each island tensor that the walk could not finish on its own (one read by another
float op, or a graph output) gets a quantization and a QuantizeLinear ->
DequantizeLinear pair on it, written into the ONNX graph. Which quantization comes
from the first rule that applies (``Inferred.rule`` records it; the importer puts
the list in the graph's metadata, which `synapse inspect` prints):

  read         a QuantizeLinear reads the tensor: its scale and zero point
  through OP   the tensor's only reader is OP, an op that commutes with the clamp and
               rounding of a quantize (Relu, Clip, max pool, reshapes), and a
               QuantizeLinear reads OP's output (directly or again through one). Not an
               average: its output range is narrower than its input's, so the output's
               quantization would clip the input (17 steps off on a densenet-like tail)
  stated OP    the op's output has a fixed quantization: Softmax and Sigmoid
               1/256 with zero point -128 (onnxruntime's int8 convention), Tanh 1/128
  range OP     the real range that OP's inputs' quantizations allow (sum of the
               ranges for Add/Sum, the union for Concat, clamped for Relu ...),
               extended to include 0, over the 256 int8 codes: s = (hi - lo) / 255,
               z = rint(-128 - lo / s)

A float graph input read through layout ops (Flatten, Reshape, Transpose, Squeeze,
Unsqueeze, Identity) by a QuantizeLinear is quantized at the input instead: those ops
only move elements, so they commute with the elementwise quantize exactly.

Before rewriting, every op of every island must have an integer rule: the first one
(in graph order) that has none is named in the error, not an op downstream of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper, numpy_helper

from ..errors import OnnxImportError, UnsupportedOpError
from . import checks
from .checks import label
from .conv_transpose import QOPERATOR_HINT
from .movement import MOVE_OPS

CONST, INT, DEQ, FLOAT, FLOAT_IN, ACC = "const", "int", "deq", "float", "float input", "acc"
# Ops the walk runs on a dequantized tensor's int8 codes (the value stays a Deq).
CODE_OPS = {"MaxPool", "Relu", "Clip", "Pad", "Reshape", "Flatten", "Transpose", "Squeeze",
            "Unsqueeze", "Identity", "Dropout", "Split"} | MOVE_OPS
# Ops that move elements only: they commute with QuantizeLinear.
LAYOUT_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity",
              "Dropout"} | MOVE_OPS
# Readers of a float op's output that the walk folds into the op's own emission.
PENDING_READERS = {"QuantizeLinear", "Relu", "Clip", "MaxPool", "Pad"} | LAYOUT_OPS
# Ops whose output keeps the input's scale, or stays inside its range: a QuantizeLinear
# after them also fits their input.
SCALE_KEEPING = {"Relu", "Clip", "MaxPool", "Pad", "AveragePool", "GlobalAveragePool",
                 "ReduceMean", "ReduceMax"} | LAYOUT_OPS
# Of those, the ones a quantize commutes with: Q(op(x)) = op(Q(x)) with Q's clamp.
QUANTIZE_COMMUTING = SCALE_KEEPING - {"AveragePool", "GlobalAveragePool", "ReduceMean"}
STATED = {"Softmax": (1 / 256, -128), "Sigmoid": (1 / 256, -128), "Tanh": (1 / 128, 0)}
# Ops onnxruntime's graph optimizer (quant_pre_process) creates by fusion.
ORT_FUSED = {"FusedConv", "FusedGemm", "FusedMatMul", "BiasGelu", "FastGelu",
             "QuickGelu", "SkipLayerNormalization", "BiasSoftmax", "NhwcMaxPool"}


@dataclass
class Inferred:
    """A quantization the pass gave to island tensor `tensor`, and the rule that gave it."""

    tensor: str
    scale: float
    zero_point: int
    rule: str

    def __str__(self):
        return f"{self.tensor}: scale {self.scale:.9g}, zero point {self.zero_point} ({self.rule})"


def quantize_islands(proto, order, has_rule):
    """Rewrite `proto` (in place) so that every float island is a chain of QDQ groups.

    order: its nodes in topological order; has_rule(node) -> bool says whether the
    walk has an integer rule for a node. Returns (new order, [Inferred]).
    """
    return _Pass(proto, order, has_rule).run()


class _Pass:
    def __init__(self, proto, order, has_rule):
        self.g, self.order, self.has_rule = proto.graph, list(order), has_rule
        self.inits = {t.name: t for t in self.g.initializer}
        self.consumers = {}
        for n in self.order:
            for k, i in enumerate(n.input):
                if i:
                    self.consumers.setdefault(i, []).append((n, k))
        self.producer = {o: n for n in self.order for o in n.output}
        self.outputs = {o.name for o in self.g.output}
        self.quant = {}  # tensor -> (scale, zero point): known or inferred
        self.inferred = []

    def run(self):
        self._hoist_input_layout()
        kind = self._classify()
        island = [n for n in self.order if any(kind.get(o) == FLOAT for o in n.output)]
        for n in island:
            if not self.has_rule(n):
                self._unsupported(n)
        for n in island:
            for t in n.output:
                if t and kind.get(t) == FLOAT and self._needs_quant(t):
                    s, z, rule = self._infer(t, n)
                    self.inferred.append(Inferred(t, float(s), int(z), rule))
                    self._insert_qdq(t, n, s, z)
        return self.order, self.inferred

    # ---- what each tensor is ---------------------------------------------------------------
    def _classify(self):
        kind = {t: CONST for t in self.inits}
        for gi in self.g.input:
            if gi.name not in self.inits:
                elem = gi.type.tensor_type.elem_type
                kind[gi.name] = FLOAT_IN if elem == 1 else INT
        for n in self.order:
            ins = [kind.get(i, CONST) for i in n.input if i]
            op = n.op_type
            if op == "Constant" or op == "Shape" or (ins and all(k == CONST for k in ins)):
                out = CONST
            elif op == "QuantizeLinear" or n.domain not in ("", "ai.onnx") or \
                    op.startswith("QLinear"):
                out = INT
            elif op == "DequantizeLinear":
                out = DEQ
                q = self._const_qparams(n) if ins[0] == INT else None
                if q is not None:
                    self.quant[n.output[0]] = q
            elif op in ("ConvInteger", "MatMulInteger") or ACC in ins:
                out = ACC
            elif FLOAT in ins or FLOAT_IN in ins:
                out = FLOAT
            elif DEQ in ins:
                out = DEQ if op in CODE_OPS and ins[0] == DEQ else FLOAT
                if out == DEQ and n.input[0] in self.quant and op not in ("Relu", "Clip"):
                    self.quant[n.output[0]] = self.quant[n.input[0]]
            else:
                out = INT
            for o in n.output:
                if o:
                    kind[o] = out
        return kind

    def _const_qparams(self, n):
        """(scale, zero point) of a per-tensor Q/DQ node, or None."""
        vals = []
        for i in (1, 2):
            name = n.input[i] if i < len(n.input) else ""
            if not name:
                vals.append(None)
                continue
            v = self._const_value(name)
            if v is None or v.size != 1:
                return None
            vals.append(v.reshape(-1)[0])
        if vals[0] is None:
            return None
        z = vals[1]
        zp = 0 if z is None else int(z) - (128 if z.dtype == np.uint8 else 0)
        if z is None and n.op_type == "QuantizeLinear":
            zp = -128  # ONNX's default output type is uint8: code 0 is int8 -128
        return float(np.float32(vals[0])), zp

    def _const_value(self, name):
        if name in self.inits:
            return checks.to_array(self.inits[name], "initializer")
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return checks.to_array(a.t, "Constant")
        return None

    # ---- which island tensors need a quantization ---------------------------------------------
    def _needs_quant(self, t):
        """The walk finishes a float op only if each reader folds into it (a
        QuantizeLinear, a clamp, a max pool or reshape, themselves so read)."""
        if t in self.outputs:
            return True
        return any(n.op_type not in PENDING_READERS or k != 0
                   for n, k in self.consumers.get(t, []))

    def _infer(self, t, producer):
        q = self._read_by(t)
        if q is not None:
            return q
        if producer.op_type in STATED:
            s, z = STATED[producer.op_type]
            return s, z, f"stated {producer.op_type}"
        rng = self._range(t)
        if rng is None:
            raise OnnxImportError(
                f"node {label(producer)!r} (op {producer.op_type}): its float output {t!r} has no "
                "quantization: no QuantizeLinear reads it and its inputs' ranges do not give "
                "one; hint: " + (QOPERATOR_HINT if producer.op_type == "ConvTranspose" else
                                 "quantize this op too (quantize_static's op_types_to_quantize, "
                                 "or a QuantizeLinear -> DequantizeLinear pair on its output)"))
        lo, hi = min(rng[0], 0.0), max(rng[1], 0.0)
        s = np.float32((hi - lo) / 255) if hi > lo else np.float32(1)
        z = int(np.clip(np.rint(-128 - lo / s), -128, 127))
        return float(s), z, f"range {producer.op_type}"

    def _read_by(self, t, through=None):
        """(scale, zp, rule) from a QuantizeLinear that reads t, directly or through a
        chain of single-reader scale-keeping ops."""
        uses = self.consumers.get(t, [])
        for n, k in uses:
            if n.op_type == "QuantizeLinear" and k == 0:
                q = self._const_qparams(n)
                if q is not None:
                    return (*q, "read" if through is None else f"through {through}")
        if len(uses) == 1 and t not in self.outputs:
            n, k = uses[0]
            if n.op_type in QUANTIZE_COMMUTING and k == 0:
                return self._read_by(n.output[0], through or n.op_type)
        return None

    def _range(self, t, depth=0):
        """Real interval [lo, hi] that tensor t can hold, from its producer's inputs."""
        if t in self.quant:
            s, z = self.quant[t]
            return s * (-128 - z), s * (127 - z)
        n = self.producer.get(t)
        if n is None or depth > 64:
            return None
        op = n.op_type
        ins = []  # per input: ("const", value), or the activation's (lo, hi)
        for i in n.input:
            c = self._dq_const(i) if i else None
            ins.append(("const", c) if c is not None else self._range(i, depth + 1) if i else None)
        act = [r for r in ins if r is not None and r[0] != "const"]
        if len(act) != sum(1 for i, r in zip(n.input, ins) if i and (r is None or r[0] != "const")):
            return None  # an activation input without a range
        if op in ("Add", "Sum") and len(act) == len(ins) and act:
            return sum(r[0] for r in act), sum(r[1] for r in act)
        if op == "Sub" and len(act) == 2:
            return act[0][0] - act[1][1], act[0][1] - act[1][0]
        if op == "Relu" and act:
            return max(act[0][0], 0.0), max(act[0][1], 0.0)
        if op in SCALE_KEEPING | {"Concat"} and act:
            return min(r[0] for r in act), max(r[1] for r in act)
        if op in ("Mul", "Div", "Add", "Sub") and len(act) == 1 and len(ins) == 2:
            c = next(r[1] for r in ins if r is not None and r[0] == "const")
            if c is None:
                return None
            lo, hi = act[0]
            cl, ch = float(np.min(c)), float(np.max(c))
            if op in ("Add", "Sub"):
                return (lo + cl, hi + ch) if op == "Add" else (lo - ch, hi - cl)
            if op == "Div":
                if cl <= 0 <= ch:
                    return None
                cl, ch = 1 / ch, 1 / cl
            ends = [lo * cl, lo * ch, hi * cl, hi * ch]
            return min(ends), max(ends)
        if op == "BatchNormalization" and act:
            p = [self._dq_const(i) for i in n.input[1:5]]
            if any(v is None for v in p):
                return None
            eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
            g = p[0] / np.sqrt(p[3] + eps)
            off = p[1] - p[2] * g
            lo, hi = act[0]
            ends = np.stack([lo * g + off, hi * g + off])
            return float(ends.min()), float(ends.max())
        if op in STATED:
            return (0.0, 1.0) if op != "Tanh" else (-1.0, 1.0)
        return None

    def _dq_const(self, name):
        """A constant's real value (float, or DequantizeLinear of a constant), or None."""
        v = self._const_value(name) if name else None
        if v is not None:
            return v.astype(np.float64) if v.dtype.kind == "f" else None
        p = self.producer.get(name)
        if p is None or p.op_type != "DequantizeLinear":
            return None
        q, s = self._const_value(p.input[0]), self._const_value(p.input[1])
        if q is None or s is None:
            return None
        z = self._const_value(p.input[2]) if len(p.input) > 2 and p.input[2] else None
        z = 0 if z is None else z.astype(np.float64)
        if np.ndim(s) and q.ndim:  # per axis: along `axis`
            axis = next((a.i for a in p.attribute if a.name == "axis"), 1) % q.ndim
            shape = [1] * q.ndim
            shape[axis] = -1
            if s.size != q.shape[axis] or np.size(z) not in (1, s.size):
                raise OnnxImportError(f"node {label(p)!r} (op DequantizeLinear): {s.size} scales "
                                      f"for an axis of {q.shape[axis]}")
            s = s.reshape(shape)
            z = np.reshape(z, shape) if np.ndim(z) else z
        return (q.astype(np.float64) - z) * s

    # ---- rewriting -------------------------------------------------------------------------
    def _insert_qdq(self, t, producer, s, z):
        """t := DequantizeLinear(QuantizeLinear(t')), t' the producer's output renamed."""
        raw = f"{t}.float"
        producer.output[:] = [raw if o == t else o for o in producer.output]
        sname, zname = f"{t}.island_scale", f"{t}.island_zero_point"
        self.g.initializer.extend([numpy_helper.from_array(np.array(s, np.float32), sname),
                                   numpy_helper.from_array(np.array(z, np.int8), zname)])
        q = helper.make_node("QuantizeLinear", [raw, sname, zname], [f"{t}.island_q"],
                             name=f"{label(producer)}.island_q")
        dq = helper.make_node("DequantizeLinear", [f"{t}.island_q", sname, zname], [t],
                              name=f"{label(producer)}.island_dq")
        self.g.node.extend([q, dq])
        at = self.order.index(producer) + 1
        self.order[at:at] = [q, dq]
        self.quant[t] = (float(np.float32(s)), int(z))

    def _hoist_input_layout(self):
        """A float input read through layout ops by a QuantizeLinear: quantize it first."""
        for gi in self.g.input:
            if gi.name in self.inits or gi.type.tensor_type.elem_type != 1:
                continue
            uses = self.consumers.get(gi.name, [])
            if all(n.op_type == "QuantizeLinear" for n, _ in uses):
                continue
            qs = {self._through_layout(n, k) for n, k in uses}
            if len(qs) != 1 or None in qs:
                continue  # the importer's boundary check names the offending reader
            s, z = qs.pop()
            name = gi.name
            sname, zname = f"{name}.boundary_scale", f"{name}.boundary_zero_point"
            self.g.initializer.extend([numpy_helper.from_array(np.array(s, np.float32), sname),
                                       numpy_helper.from_array(np.array(z, np.int8), zname)])
            q = helper.make_node("QuantizeLinear", [name, sname, zname], [f"{name}.boundary_q"],
                                 name=f"{name}.boundary_q")
            dq = helper.make_node("DequantizeLinear", [f"{name}.boundary_q", sname, zname],
                                  [f"{name}.boundary_dq"], name=f"{name}.boundary_dq")
            for n, k in uses:
                n.input[k] = f"{name}.boundary_dq"
            self.g.node.extend([q, dq])
            self.order[0:0] = [q, dq]
            self.consumers[name] = [(q, 0)]
            self.consumers[f"{name}.boundary_q"] = [(dq, 0)]
            self.consumers[f"{name}.boundary_dq"] = uses
            self.producer.update({f"{name}.boundary_q": q, f"{name}.boundary_dq": dq})
            self.inferred.append(Inferred(name, float(s), int(z),
                                          "read (quantized before its layout ops)"))

    def _through_layout(self, n, k):
        """(scale, zp) of the QuantizeLinear at the end of a layout-op chain from (n, k)."""
        while True:
            if n.op_type == "QuantizeLinear" and k == 0:
                return self._const_qparams(n)
            uses = self.consumers.get(n.output[0], [])
            if n.op_type not in LAYOUT_OPS or k != 0 or len(uses) != 1 or \
                    n.output[0] in self.outputs:
                return None
            n, k = uses[0]

    def _unsupported(self, n):
        raise UnsupportedOpError(
            f"node {label(n)!r} (op {n.op_type}): the first op of a float island that has no "
            f"Synapse integer implementation; hint: {unsupported_hint(n)}")


def unsupported_hint(node):
    """What a user can do about an op without an integer rule."""
    if node.op_type in ORT_FUSED:
        return ("this op is created by onnxruntime's graph optimizer (quant_pre_process fuses "
                "it): run quant_pre_process with skip_optimization=True, then quantize again")
    if node.op_type == "QLinearConvTranspose":
        return QOPERATOR_HINT
    return "docs/onnx_import.md lists the supported ops"
