"""Load-time proofs: shapes, the int32 accumulator bound, and the Synapse limits.

strict=True (the default) enforces the Synapse testnet limits; strict=False
(``InferenceSession(..., strict=False)``, ``synapse --no-strict``) reports them
without refusing the model. The int32 overflow proof is never optional: a layer
that could overflow would give platform-dependent garbage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import (ChannelLimitError, DepthLimitError, InputSizeLimitError,
                     KernelSizeLimitError, OverflowRiskError)
from .opdefs import opdef
from .plan import Traversal, plan, topological_order
from .shapes import infer_shapes

MAX_DEPTH = 200  # layers on the longest path
MAX_CHANNELS = 4096
MAX_INPUT_ELEMS = 3 * 224 * 224  # per sample
MAX_REDUCTION = 1 << 16  # kernel size x input channels must stay below
ACC_LIMIT = 1 << 31  # |acc| must stay below: int32


@dataclass
class NodeInfo:
    name: str
    op: str
    out_shape: tuple
    n_params: int  # parameter elements
    acc_bound: int | None  # worst-case |int32 accumulator| over channels
    worst_channel: int | None
    reduction: int | None  # terms summed per output


@dataclass
class Report:
    traversal: Traversal
    nodes: list
    depth: int
    violations: list = field(default_factory=list)  # (exception type, message)

    @property
    def within_limits(self):
        return not self.violations


def _depth(graph, order):
    depth = {t.name: 0 for t in graph.inputs}
    for n in order:
        d = max((depth[i] for i in n.inputs), default=0) + (1 if opdef(n).compute else 0)
        for o in n.outputs:
            depth[o] = d
    return max((depth[t.name] for t in graph.outputs), default=0)


def validate(graph, strict=True):
    """Check the whole graph; returns a Report with the planned Traversal.

    Raises a specific SynapseError subclass on the first problem (limits only
    when strict).
    """
    order = topological_order(graph)
    shapes = infer_shapes(graph, order)
    violations = []

    def limit(exc, msg):
        if strict:
            raise exc(msg + " (strict Synapse limits; strict=False / --no-strict to allow)")
        violations.append((exc.__name__, msg))

    for t in graph.inputs:
        n_el = math.prod(t.shape[1:])
        if n_el > MAX_INPUT_ELEMS:
            limit(InputSizeLimitError, f"graph input {t.name!r}: {list(t.shape[1:])} = {n_el} "
                                       f"elements per sample > limit 3x224x224 = {MAX_INPUT_ELEMS}")
    infos = []
    for n in order:
        d = opdef(n)
        params = {r: graph.buffers[b] for r, b in n.params.items()}
        ins = [shapes[i] for i in n.inputs]
        out = shapes[n.outputs[0]]
        if len(out) >= 2 and out[1] > MAX_CHANNELS:
            limit(ChannelLimitError, f"node {n.name!r} (op {n.op}): {out[1]} channels > limit {MAX_CHANNELS}")
        red = d.reduction(n, ins, params) if d.reduction else None
        if red is not None and red >= MAX_REDUCTION:
            limit(KernelSizeLimitError, f"node {n.name!r} (op {n.op}): kernel size x input channels "
                                        f"= {red} >= limit 2^16 = {MAX_REDUCTION}")
        bound, worst = None, None
        if d.bound:
            b = np.asarray(d.bound(n, ins, params), dtype=np.int64)
            worst = int(np.argmax(b))
            bound = int(b[worst])
            if bound >= ACC_LIMIT:
                raise OverflowRiskError(
                    f"node {n.name!r} (op {n.op}), output channel {worst}: worst-case accumulator "
                    f"{bound} >= 2^31; requantize the weights (smaller scale) or split the layer")
        infos.append(NodeInfo(n.name, n.op, out, sum(int(p.size) for p in params.values()),
                              bound, worst, red))
    depth = _depth(graph, order)
    if depth > MAX_DEPTH:
        limit(DepthLimitError, f"{depth} layers on the longest path > limit {MAX_DEPTH}")
    return Report(plan(graph, order, shapes), infos, depth, violations)
