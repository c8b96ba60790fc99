"""Deterministic cost ("gas"): an integer price per node, per sample, per batch.

The cost is a property of the model file: it is computed from the graph's
structure, shapes and parameter sizes alone, never from a run, a device or a
clock, so every machine charges the same amount for the same model.

Per node and per sample, six counts (docs/SPEC.md, "Deterministic cost"):
    macs          integer multiply-accumulates (conv/dense/matmul terms, per-element
                  products of batchnorm, prelu, mul, add's two multipliers)
    alu           other integer element operations (comparisons, window sums, clamps)
    requants      int32 -> int8 requantizations (one per output element of a
                  requantizing op)
    lookups       table lookups (lut, softmax's exp table)
    bytes_read    int8 activation bytes read + the node's parameter bytes
    bytes_written int8 activation bytes written
cost = sum(WEIGHTS[k] * count[k]). Parameters are charged per sample (in the
one-thread-per-output execution model each output reads its weights), so a
batch of n samples costs exactly n times one sample: like the digest, the price
does not depend on how samples are grouped into batches.
Changing a rule or a weight changes COST_VERSION.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from .errors import UnsupportedOpError
from .plan import topological_order
from .shapes import infer_shapes

COST_VERSION = "synapse-cost-v1"
WEIGHTS = {"macs": 1, "alu": 1, "requants": 4, "lookups": 1, "bytes_read": 1, "bytes_written": 1}
COUNTS = tuple(WEIGHTS)


@dataclass(frozen=True)
class NodeCost:
    name: str
    op: str
    macs: int
    alu: int
    requants: int
    lookups: int
    bytes_read: int
    bytes_written: int

    @property
    def total(self):
        return sum(WEIGHTS[k] * getattr(self, k) for k in COUNTS)


@dataclass(frozen=True)
class ModelCost:
    nodes: tuple  # NodeCost per node, in execution order
    version: str = COST_VERSION

    @cached_property  # read on every run (RunResult's cost): summed once
    def per_sample(self):
        return sum(n.total for n in self.nodes)

    def per_batch(self, n):
        return n * self.per_sample

    def count(self, kind):
        """One count (e.g. "macs") summed over the nodes, per sample."""
        return sum(getattr(n, kind) for n in self.nodes)

    def by_op(self):
        """op -> per-sample cost of all its nodes."""
        out = {}
        for n in self.nodes:
            out[n.op] = out.get(n.op, 0) + n.total
        return out


def _elems(shape):
    return math.prod(shape[1:])  # per sample: axis 0 is the batch


def _conv(node, ins, out, params):
    e = _elems(out)
    return {"macs": e * math.prod(params["w"].shape[1:]), "requants": e}


def _dense(node, ins, out, params):
    return {"macs": _elems(out) * ins[0][-1], "requants": _elems(out)}


def _per_element(**per_elem):
    def rule(node, ins, out, params):
        return {k: v * _elems(out) for k, v in per_elem.items()}
    return rule


def _window(requant):
    def rule(node, ins, out, params):
        e = _elems(out)
        return {"alu": e * math.prod(node.attrs["kernel_shape"]), "requants": e if requant else 0}
    return rule


def _global_pool(node, ins, out, params):
    return {"alu": _elems(ins[0]), "requants": _elems(out)}


def _softmax(node, ins, out, params):
    e = _elems(out)  # max, subtract, sum per element; one rational rounding each
    return {"alu": 3 * e, "lookups": e, "requants": e}


def _lrn(node, ins, out, params):
    e = _elems(out)  # a square and an add per window tap; a binary search of the row
    return {"macs": e * int(node.attrs["size"]),
            "lookups": e * max(1, int(params["thresholds"].shape[1])).bit_length()}


def _layernorm(node, ins, out, params):
    e = _elems(out)  # the row's two sums, the centred value, the square root and rescale
    return {"alu": 4 * e, "macs": 2 * e, "requants": e}


def _resize_linear(node, ins, out, params):
    e = _elems(out)  # 2^k corners, each a weight product and a multiply-add
    return {"macs": e * 2 ** len(node.attrs["sizes"]), "requants": e}


def _move(node, ins, out, params):
    return {}  # bytes only


_RULES = {
    "conv1d": _conv, "conv2d": _conv, "conv3d": _conv,
    "dense": _dense, "matmul": _dense,
    "requantize": _per_element(requants=1),
    "batchnorm": _per_element(macs=1, requants=1),
    "prelu": _per_element(macs=1, requants=1),
    "mul": _per_element(macs=1, requants=1),
    "add": _per_element(macs=2, requants=1),
    "relu": _per_element(alu=1),
    "clip": _per_element(alu=1),
    "lut": _per_element(lookups=1),
    "softmax": _softmax,
    "max_pool": _window(requant=False),
    "avg_pool": _window(requant=True),
    "global_avg_pool": _global_pool,
    "concat": _per_element(requants=1),  # each input is rescaled to the output's scale
    "flatten": _move, "reshape": _move, "transpose": _move, "identity": _move, "pad": _move,
    "take": _move,
    "embedding": _move,
    "constant": _move,
    "lrn": _lrn,
    "layernorm": _layernorm,
    "resize_linear": _resize_linear,
}


def node_cost(node, in_shapes, out_shape, params):
    """NodeCost of one node from its shapes and parameter arrays."""
    try:
        rule = _RULES[node.op]
    except KeyError:
        raise UnsupportedOpError(f"node {node.name!r}: op {node.op!r} has no cost rule") from None
    c = {k: 0 for k in COUNTS}
    c.update(rule(node, in_shapes, out_shape, params))
    c["bytes_read"] = (sum(_elems(s) for s in in_shapes)
                       + sum(int(p.size) * p.dtype.itemsize for p in params.values()))
    c["bytes_written"] = _elems(out_shape)
    return NodeCost(node.name, node.op, **{k: int(v) for k, v in c.items()})


def model_cost(graph, shapes=None, order=None):
    """ModelCost of a Graph (shapes and order are recomputed when not given)."""
    order = order or topological_order(graph)
    shapes = shapes or infer_shapes(graph, order)
    return ModelCost(tuple(
        node_cost(n, [shapes[i] for i in n.inputs], shapes[n.outputs[0]],
                  {r: graph.buffers[b] for r, b in n.params.items()}) for n in order))
