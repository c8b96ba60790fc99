"""Load-time proofs: structure, schemas, shapes, the int32 accumulator bound, static
resource bounds and the Synapse limits.

strict=True (the default) enforces the Synapse testnet limits; strict=False
(``InferenceSession(..., strict=False)``, ``synapse --no-strict``) reports them
without refusing the model. The int32 overflow proof is never optional: a layer
that could overflow would give platform-dependent garbage. The resource bounds
(peak activation bytes and work per sample, `Limits`) are always enforced, with
configurable limits, so a hostile file is refused before anything of its size is
allocated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .cost import model_cost
from .errors import (ChannelLimitError, CostLimitError, DepthLimitError, InputSizeLimitError,
                     KernelSizeLimitError, OverflowRiskError, ResourceLimitError, ShapeError)
from .opdefs import opdef
from .plan import Traversal, plan, topological_order
from .shapes import infer_shapes

MAX_DEPTH = 200  # layers on the longest path
MAX_CHANNELS = 4096
MAX_INPUT_ELEMS = 3 * 224 * 224  # per sample
MAX_REDUCTION = 1 << 16  # kernel size x input channels must stay below
ACC_LIMIT = 1 << 31  # |acc| must stay below: int32


@dataclass(frozen=True)
class Limits:
    """Static resource bounds per sample, checked at load before any allocation.

    activation_bytes: the planned int8 activation slots of one sample (Traversal);
    ResNet-50 at 224x224 needs about 2.4 MiB. The CPU path's temporaries reach ~128
    bytes per element of a tensor (session.CPU_BYTES_PER_ELEMENT), so 64 MiB keeps one
    sample within a few GiB. work: the deterministic cost per sample (cost.py;
    ResNet-50: about 4.2e9). None disables a bound.
    """

    activation_bytes: int | None = 64 << 20
    work: int | None = 1 << 36


DEFAULT_LIMITS = Limits()


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
    activation_bytes: int  # per sample: the planned int8 slots
    work: int  # per sample: cost.py's deterministic cost
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


def _check_outputs(graph, shapes):
    for t in graph.outputs:
        if tuple(t.shape) != shapes[t.name]:
            raise ShapeError(f"graph output {t.name!r}: declared shape {list(t.shape)} but the ops "
                             f"give {list(shapes[t.name])}; the model file is inconsistent")


def _check_resources(graph, traversal, shapes, order, limits):
    """(activation bytes, work) per sample; ResourceLimitError / CostLimitError above limits."""
    act = sum(traversal.slot_elems)
    if limits.activation_bytes is not None and act > limits.activation_bytes:
        big = max(shapes, key=lambda t: math.prod(shapes[t][1:]))
        raise ResourceLimitError(
            f"the model needs {act} bytes of activations per sample (largest tensor {big!r}, "
            f"{list(shapes[big])}) > limit {limits.activation_bytes}; raise the limit "
            f"(max_activation_bytes) only for a model you trust")
    work = model_cost(graph, shapes, order).per_sample
    if limits.work is not None and work > limits.work:
        raise CostLimitError(f"model cost {work} per sample > max_cost {limits.work} (cost.py's "
                             f"deterministic work); raise max_cost only for a model you trust")
    return act, work


def validate(graph, strict=True, limits=DEFAULT_LIMITS):
    """Check the whole graph; returns a Report with the planned Traversal.

    Raises a specific SynapseError subclass on the first problem (limits only
    when strict; resource bounds per `limits`, Limits(None, None) to report only).
    """
    order = topological_order(graph)
    shapes = infer_shapes(graph, order)
    _check_outputs(graph, shapes)
    traversal = plan(graph, order, shapes)
    act, work = _check_resources(graph, traversal, shapes, order, limits)
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
    return Report(traversal, infos, depth, act, work, violations)
