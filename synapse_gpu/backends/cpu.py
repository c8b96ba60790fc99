"""CPU backend: the numpy reference, with conv and dense on the exact float-BLAS path
and the per-element requantizing ops as exact lookup tables (cpu_tables.py).

Executes the core's traversal in order. Intermediates live in a dict and are
dropped after their last reader (numpy's allocator reuses the memory); the slot
plan matters for the device backend, where allocation is explicit.
"""
from __future__ import annotations

from .. import registry
from . import cpu_tables

_FAST = {"conv1d", "conv2d", "conv3d", "dense"}


def _step(node, buffers):
    if node.op in _FAST:
        from . import cpu_conv

        prepare = cpu_conv.prepare_dense if node.op == "dense" else cpu_conv.prepare_conv
        return prepare(**registry.node_kwargs(node, buffers))  # weights laid out once per session
    if node.op in cpu_tables.TABLE_OPS:
        return cpu_tables.prepare(node, buffers)
    ref = registry.reference_op(node.op)
    return lambda *xs: registry.call(ref, node, xs, buffers)


class CpuExecutable:
    device = "cpu"

    def __init__(self, graph, traversal):
        self.graph, self.traversal = graph, traversal
        self.steps = []
        for n in traversal.order:
            self.steps.append((n, _step(n, graph.buffers)))
        last = {}
        for i, n in enumerate(traversal.order):
            for t in n.inputs:
                last[t] = i
        keep = {t.name for t in graph.outputs}
        self.drop_after = [[t for t in set(n.inputs) if last[t] == i and t not in keep]
                           for i, n in enumerate(traversal.order)]

    def run(self, feeds, trace=False):
        env = dict(feeds)
        steps = [] if trace else None
        for (n, fn), drop in zip(self.steps, self.drop_after):
            y = fn(*[env[i] for i in n.inputs])
            env[n.outputs[0]] = y
            if trace:
                steps.append((n.name, n.outputs[0], y))
            for t in drop:
                if t not in feeds:
                    del env[t]
        return {t.name: env[t.name] for t in self.graph.outputs}, steps


def prepare(graph, traversal, verbose=False):
    return CpuExecutable(graph, traversal)
