"""Traversal planning: topological order and the activation buffer plan.

The plan is computed once by the core and handed whole to a backend. Buffers
("slots") are sized per sample; a backend allocates slot_elems[i] * batch bytes
(int8). A tensor's slot is reused once its last reader has run; graph inputs and
outputs keep their own slots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ModelFormatError
from .reference.embedding import ID_BYTES
from .schema import INT8, MAX_RANK, is_int


@dataclass
class Traversal:
    order: list  # Node, topological (ties broken by the graph's node order)
    shapes: dict  # tensor -> shape, axis 0 = -1 for the batch
    slot_of: dict  # tensor -> slot index
    slot_elems: list  # per-sample int8 elements of each slot

    def sample_elems(self, tensor):
        return math.prod(self.shapes[tensor][1:])


def _spec_error(t):
    if not isinstance(t.name, str):
        return f"name {t.name!r} is not a string"
    if not isinstance(t.shape, (tuple, list)) or not 1 <= len(t.shape) <= MAX_RANK or not all(
            is_int(d) for d in t.shape):
        return f"shape {t.shape!r} must be 1 to {MAX_RANK} integers"
    if not (t.shape[0] == -1 or t.shape[0] >= 1) or min(t.shape[1:], default=1) < 1:
        return f"shape {list(t.shape)} must be (batch or -1, positive dims...)"
    return _quant_error(t.scale, t.zero_point)


def _quant_error(scale, zero_point):
    if not isinstance(scale, (float, np.floating)) or not np.isfinite(scale) or scale <= 0:
        return f"scale {scale!r} must be a finite float32 > 0"
    if not is_int(zero_point) or not INT8[0] <= zero_point <= INT8[1]:
        return f"zero point {zero_point!r} must be an integer in [-128, 127]"
    return None


def _is_names(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def check_structure(graph):
    """The types of every structural field, before any pass hashes, indexes or sizes them:
    a hostile file can put any JSON value anywhere (ModelFormatError names the place)."""
    def bad(where, msg):
        raise ModelFormatError(f"{where}: {msg}; the model file is malformed (rebuild or re-import it)")

    for kind, specs in (("input", graph.inputs), ("output", graph.outputs)):
        if not specs:
            bad("graph", f"no {kind}s")
        for t in specs:
            err = _spec_error(t)
            if err:
                bad(f"graph {kind} {t.name!r}", err)
        names = [t.name for t in specs]
        if len(set(names)) != len(names):
            bad("graph", f"duplicate {kind} names {sorted(n for n in set(names) if names.count(n) > 1)}")
    for n in graph.nodes:
        if not isinstance(n.name, str) or not isinstance(n.op, str):
            bad(f"node {n.name!r}", "name and op must be strings")
        if not _is_names(n.inputs) or not _is_names(n.outputs):
            bad(f"node {n.name!r}", "inputs and outputs must be lists of tensor names")
        if not isinstance(n.attrs, dict) or not isinstance(n.params, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in n.params.items()):
            bad(f"node {n.name!r}", "attrs must be a mapping and params map roles to buffer ids")
    _check_token_inputs(graph, bad)
    for name, q in graph.quant.items():
        ok = isinstance(q, (tuple, list)) and len(q) == 2
        err = _quant_error(*q) if ok else f"{q!r} is not (scale, zero point)"
        if err:
            bad(f"quantization of tensor {name!r}", err)
    for t in graph.inputs + graph.outputs:
        if tuple(graph.quant.get(t.name, (t.scale, t.zero_point))) != (t.scale, t.zero_point):
            bad(f"graph boundary tensor {t.name!r}", f"scale and zero point ({t.scale}, {t.zero_point}) "
                f"differ from the graph's quantization of it {graph.quant[t.name]}")


def _check_token_inputs(graph, bad):
    """Token ids (dtype int64, carried as 4 bytes each) are read by embedding nodes only, and
    an embedding reads nothing else: no op ever takes an id's bytes for int8 codes."""
    tokens = set()
    for kind, specs in (("input", graph.inputs), ("output", graph.outputs)):
        for t in specs:
            if t.dtype not in ("int8", "int64") or (t.dtype == "int64" and (
                    kind == "output" or len(t.shape) < 2 or t.shape[-1] != ID_BYTES)):
                bad(f"graph {kind} {t.name!r}", f"dtype {t.dtype!r} with shape {list(t.shape)}: an "
                    f"input is int8, or int64 token ids carried as (N, ..., {ID_BYTES}) bytes")
            if t.dtype == "int64":
                tokens.add(t.name)
    for n in graph.nodes:
        for i in n.inputs:
            if (i in tokens) != (n.op == "embedding"):
                bad(f"node {n.name!r} (op {n.op})", f"reads {i!r}: token ids are read by "
                    "embedding nodes only, and an embedding reads only a token input")
    unread = tokens - {i for n in graph.nodes if n.op == "embedding" for i in n.inputs}
    if unread:  # its ids could not be range-checked against any table
        bad(f"graph input {sorted(unread)[0]!r}", "token ids that no embedding reads")


def topological_order(graph):
    """Kahn's algorithm over tensors; rejects duplicate producers, dangling inputs, cycles."""
    check_structure(graph)
    produced = {t.name: None for t in graph.inputs}
    names = set()
    for n in graph.nodes:
        if n.name in names:
            raise ModelFormatError(f"duplicate node name {n.name!r}")
        names.add(n.name)
        for o in n.outputs:
            if o in produced:
                raise ModelFormatError(f"tensor {o!r} is produced twice (node {n.name!r})")
            produced[o] = n
    for n in graph.nodes:
        for i in n.inputs:
            if i not in produced:
                raise ModelFormatError(f"node {n.name!r} (op {n.op}) reads {i!r}, which nothing produces")
    for t in graph.outputs:
        if t.name not in produced:
            raise ModelFormatError(f"graph output {t.name!r} is not produced by any node")
    waiting = {n.name: len({i for i in n.inputs if produced[i] is not None}) for n in graph.nodes}
    readers = {}
    for n in graph.nodes:
        for i in set(n.inputs):
            readers.setdefault(i, []).append(n)
    ready = [n for n in graph.nodes if waiting[n.name] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for o in n.outputs:
            for r in readers.get(o, []):
                waiting[r.name] -= 1
                if waiting[r.name] == 0:
                    ready.append(r)
    if len(order) != len(graph.nodes):
        stuck = sorted(k for k, v in waiting.items() if v > 0)
        raise ModelFormatError(f"the graph has a cycle through nodes {stuck[:5]}")
    return order


def plan(graph, order, shapes):
    """Assign each tensor a slot: greedy reuse of the smallest free slot that fits."""
    last_read = {}
    for step, n in enumerate(order):
        for i in n.inputs:
            last_read[i] = step
    pinned = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    slot_of, slot_elems, free = {}, [], []

    def elems(t):
        return math.prod(shapes[t][1:])

    def take(t):
        need = elems(t)
        fits = [s for s in free if slot_elems[s] >= need]
        s = min(fits, key=lambda s: slot_elems[s]) if fits else None
        if s is None and free:  # grow the largest free slot rather than add one
            s = max(free, key=lambda s: slot_elems[s])
            slot_elems[s] = need
        if s is None:
            s = len(slot_elems)
            slot_elems.append(need)
        else:
            free.remove(s)
        slot_of[t] = s

    for t in graph.inputs:
        take(t.name)
    for step, n in enumerate(order):
        for o in n.outputs:
            take(o)
        for i in set(n.inputs):
            if last_read.get(i) == step and i not in pinned:
                free.append(slot_of[i])
        for o in n.outputs:  # an output nobody reads (and not a graph output)
            if o not in last_read and o not in pinned:
                free.append(slot_of[o])
    return Traversal(list(order), dict(shapes), slot_of, slot_elems)
