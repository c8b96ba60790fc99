"""Float functions of one quantized tensor -> one `lut` node (a 256-entry table).

A pre-pass over the ONNX graph, before the float-island pass (islands.py), finds each
region of elementwise float ops that is a function of ONE tensor x: unary ops
(reference/unary.py's UNARY: Erf, HardSwish, Mish, Gelu, ...), Clip, and binary ops
(Add, Sub, Mul, Div, Pow, Max, Min) whose other operand is a scalar constant or
another function of the same x (so x * Sigmoid(x) is one function of x: SiLU/Swish).
Each region tensor read outside the region becomes ONE node `SynapseFunction(x)`
whose attribute `body` holds the region nodes it depends on (original names kept,
constants read from the outer graph). The walk then emits, at the scale of the
QuantizeLinear that reads it, a `lut` whose table is the whole chain evaluated in
float64 (reference/unary.py): one rounding instead of one per op, and no island
quantization inside the chain.

Fused: a region with at least one function op (anything in UNARY but Relu), unless
it is a single op the walk already lowers (Sigmoid, Tanh, LeakyRelu: the same
tables). Regions of plain arithmetic (x * c + d) keep the walk's per-channel rules.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from .. import build
from ..errors import UnsupportedOpError
from ..reference import unary
from .checks import label
from .values import Const, Pending, QConst

OP = "SynapseFunction"
_TRIGGERS = set(unary.UNARY) - {"Relu"}
_MEMBERS = set(unary.UNARY) | set(unary.BINARY) | {"Clip", "Identity"}


def fuse_functions(proto, order, has_rule):
    """The topological order with each function-of-one-tensor region replaced by
    SynapseFunction nodes (proto is only read)."""
    g = proto.graph
    consts, static = _constants(g, order)
    root, region = {}, {}  # tensor -> its region's root; root -> [member nodes]
    for n in order:
        r = _member_root(n, root, consts)
        if r is None or r in static:
            continue
        region.setdefault(r, []).append(n)
        root[n.output[0]] = r
    graph_outputs = {o.name for o in g.output}
    readers = {}
    for n in order:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    fused = {}  # id(member) -> its SynapseFunction node, or None (dropped)
    for r, nodes in region.items():
        if not any(n.op_type in _TRIGGERS for n in nodes) or (
                len(nodes) == 1 and has_rule(nodes[0])):
            continue
        members = {id(n) for n in nodes}
        for n in nodes:
            t = n.output[0]
            exits = t in graph_outputs or any(id(m) not in members for m in readers.get(t, []))
            fused[id(n)] = _function_node(r, t, _depends(n, nodes), n) if exits else None
    if not fused:
        return order
    # Only the order changes: the walk and the island pass read it, and the caller's
    # ModelProto stays as it was.
    new_order = [fused[id(n)] if id(n) in fused else n for n in order]
    return [n for n in new_order if n is not None]


def _constants(g, order):
    """(scalar constants: initializers, Constant nodes, DQ of either; tensors computed
    from constants or shapes only, which the walk folds)."""
    consts = {t.name for t in g.initializer if np.prod(t.dims, dtype=np.int64) == 1}
    static = {t.name for t in g.initializer}
    for n in order:
        ins = [i for i in n.input if i]
        if n.op_type in ("Constant", "Shape") or ins and all(i in static for i in ins):
            static.update(n.output)
        if n.op_type == "Constant":
            a = {x.name: x for x in n.attribute}
            if "value" in a and np.prod(a["value"].t.dims, dtype=np.int64) == 1 or \
                    "value_float" in a:
                consts.add(n.output[0])
        elif n.op_type == "DequantizeLinear" and all(i in consts for i in ins):
            consts.add(n.output[0])
    return consts, static


def _member_root(n, root, consts):
    """The one tensor a region op is a function of, or None if it is not one."""
    if n.domain not in ("", "ai.onnx") or n.op_type not in _MEMBERS or len(n.output) != 1:
        return None
    if n.op_type in unary.BINARY and len(n.input) != 2:
        return None
    srcs = {root.get(i, i) for k, i in enumerate(n.input)
            if i and not (i in consts and (k > 0 or n.op_type in unary.BINARY))}
    return srcs.pop() if len(srcs) == 1 else None


def _depends(exit_node, nodes):
    need, out = set(exit_node.output), []
    for n in reversed(nodes):
        if need & set(n.output):
            out.append(n)
            need |= {i for i in n.input if i}
    return out[::-1]


def _function_node(x, t, body, last):
    graph = helper.make_graph(body, f"{t}.function",
                              [helper.make_value_info(x, helper.TypeProto())],
                              [helper.make_value_info(t, helper.TypeProto())])
    return helper.make_node(OP, [x], [t], name=last.name or None, body=graph)


class UnaryOps:
    """The walk's handler of SynapseFunction (a mixin of importer._Importer)."""

    def _SynapseFunction(self, node):
        x = self._deq(node, 0)
        body = self._attrs(node)["body"]
        f = self._compile_function(node, body, len(self.b.shapes[self._deq_t(x)]))
        fn = ",".join(n.op_type for n in body.node)
        fn = fn if len(fn) <= 200 else fn[:197] + "..."

        def emit(ys, yz, qmin, qmax):
            xt = self._deq_t(x)
            s_x, z_x = self.b.quant[xt]
            try:
                table = unary.function_table(f, s_x, z_x, ys, yz)
            except ValueError as e:
                self._fail(node, f"the float function {fn} has no int8 table: {e}",
                           "restrict the input range (e.g. a Relu or Clip before it)",
                           UnsupportedOpError)
            # Q is monotone: the clamp of a Relu/Clip after the chain folds into the table
            table = np.clip(table, qmin, qmax).astype(np.int8)
            return build.lut(self.b, xt, table, f"onnx:{fn}", y_scale=ys, y_zero_point=yz,
                             name=label(node))
        return Pending(node, emit)

    def _compile_function(self, node, body, rank):
        """The body as a float64 function of x (reference/unary.py's definitions)."""
        known, steps = {body.input[0].name}, []
        for n in body.node:
            operands = [None if not i else i if i in known else self._scalar(n, i, rank)
                        for i in n.input]
            steps.append((n.output[0], self._function_of(n, operands, rank), operands))
            known.add(n.output[0])

        def f(x):
            env = {body.input[0].name: x}
            for out, fn, operands in steps:
                env[out] = fn(*[env[o] if isinstance(o, str) else o for o in operands])
            return env[body.output[0].name]
        return f

    def _function_of(self, n, operands, rank):
        """n's float64 function of its tensor operands (scalars already in `operands`)."""
        op, a = n.op_type, self._attrs(n)
        if op in unary.BINARY:
            return unary.BINARY[op]
        if op == "Identity":
            return lambda v: v
        if op == "Clip":
            if self.opset < 11:
                lo, hi = a.get("min"), a.get("max")
            else:
                lo, hi = (operands[k] if len(operands) > k else None for k in (1, 2))  # '' -> None
            lo = -np.inf if lo is None else float(np.float32(lo))
            hi = np.inf if hi is None else float(np.float32(hi))
            return lambda v, *_: np.clip(v, lo, hi)
        fn, defaults = unary.UNARY[op]
        kw = {}
        for k, d in defaults.items():
            v = a.get(k, d)
            if isinstance(d, str) and v not in ("none", "tanh"):
                self._fail(n, f"approximate={v!r} is not an ONNX value", exc=UnsupportedOpError)
            kw[k] = v if isinstance(d, str) else float(np.float32(v))  # ONNX floats are float32
        return lambda v: fn(v, **kw)

    def _scalar(self, n, name, rank):
        v = self._value(name)
        c = v.real() if isinstance(v, QConst) else v.value if isinstance(v, Const) else None
        if c is None or c.size != 1 or c.ndim > rank:
            self._fail(n, f"operand {name!r} is not a scalar constant that keeps the shape",
                       exc=UnsupportedOpError)
        return float(np.asarray(c, np.float64).reshape(-1)[0])
