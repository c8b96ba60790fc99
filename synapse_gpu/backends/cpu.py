"""CPU backend: the numpy reference, with conv and dense on the exact integer GEMM engine
the self-test admitted on this machine (cpu_engines.py: onnxruntime's MLAS kernels,
else the float32-BLAS path of cpu_conv.py, exact by proof) and the per-element
requantizing ops as exact lookup tables (cpu_tables.py).

Executes the core's traversal in order. Intermediates live in a dict and are
dropped after their last reader (numpy's allocator reuses the memory); the slot
plan matters for the device backend, where allocation is explicit.
"""
from __future__ import annotations

import numpy as np

from .. import registry
from . import cpu_conv, cpu_engines, cpu_pool, cpu_tables

_FAST = {"conv1d", "conv2d", "conv3d", "dense"}


def _reduction(node, buffers):
    """Terms per accumulator: C/group * prod(kernel) for a conv, K for a dense."""
    w = buffers[node.params["w"]]
    if node.op == "dense":
        return w.shape[1] if node.attrs.get("trans_w") else w.shape[0]
    return int(np.prod(w.shape[1:]))


def _fast_step(node, buffers, engine):
    """(step, path name): the engine's layer when it can express the node, else the float path.
    Weights are laid out once per session."""
    kw = registry.node_kwargs(node, buffers)
    if engine is not None:
        M32 = cpu_conv.multiplier_f32(kw["multiplier"], kw["shift"])
        layer = engine.dense(M32, **kw) if node.op == "dense" else engine.conv(M32, **kw)
        if layer is not None:
            return layer, engine.name
    prepare = cpu_conv.prepare_dense if node.op == "dense" else cpu_conv.prepare_conv
    return prepare(**kw), cpu_engines.FLOAT


def _step(node, buffers):
    if node.op == "max_pool":
        return lambda x: cpu_pool.max_pool(x, **node.attrs)
    if node.op == "avg_pool":
        return lambda x: registry.call(cpu_pool.avg_pool, node, [x], buffers)
    if node.op in cpu_tables.TABLE_OPS:
        return cpu_tables.prepare(node, buffers)
    ref = registry.reference_op(node.op)
    return lambda *xs: registry.call(ref, node, xs, buffers)


class CpuExecutable:
    device = "cpu"

    def __init__(self, graph, traversal, verbose=False):
        self.graph, self.traversal = graph, traversal
        fast = [n for n in traversal.order if n.op in _FAST]
        k_max = max((_reduction(n, graph.buffers) for n in fast), default=1)
        engine, self.engine_report = cpu_engines.choose(k_max) if fast else (None, [])
        self.engine = engine.name if engine is not None else cpu_engines.FLOAT
        self.steps, self.paths = [], {}
        for n in traversal.order:
            if n.op in _FAST:
                fn, self.paths[n.name] = _fast_step(n, graph.buffers, engine)
            else:
                fn = _step(n, graph.buffers)
            self.steps.append((n, fn))
        if verbose:
            for line in self.engine_report:
                print(f"synapse: cpu engine {line}")
            on_float = sum(p == cpu_engines.FLOAT for p in self.paths.values())
            print(f"synapse: cpu: {len(self.paths) - on_float} conv/dense layers on {self.engine}, "
                  f"{on_float} on {cpu_engines.FLOAT}")
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
    return CpuExecutable(graph, traversal, verbose)
