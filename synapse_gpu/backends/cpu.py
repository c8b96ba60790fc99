"""CPU backend: the numpy reference, with conv and dense on the exact integer GEMM engine
the self-test admitted on this machine (cpu_engines.py: onnxruntime's MLAS kernels,
else the float32-BLAS path of cpu_conv.py, exact by proof) and the per-element
requantizing ops as exact lookup tables (cpu_tables.py). With an onnxruntime engine,
the longest stretches of steps it can compute exactly run as one onnxruntime graph each
(cpu_fused.py).

Executes the core's traversal in order, as steps: one node, or one fused run of nodes.
Intermediates live in a dict and are dropped after their last reader (numpy's allocator
reuses the memory); the slot plan matters for the device backend, where allocation is
explicit.
"""
from __future__ import annotations

import numpy as np

from .. import registry
from . import cpu_conv, cpu_engines, cpu_fused, cpu_pool, cpu_tables

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


class Step:
    """Tensors `inputs` -> tensors `outputs` by `fn` (a list of arrays out); `nodes` run."""

    def __init__(self, nodes, inputs, outputs, fn, fused=None):
        self.nodes, self.inputs, self.outputs, self.fn, self.fused = nodes, inputs, outputs, fn, fused


def _node_step(n, fn):
    return Step([n], list(n.inputs), [n.outputs[0]], lambda *xs: [fn(*xs)])


class CpuExecutable:
    device = "cpu"

    def __init__(self, graph, traversal, verbose=False, fuse=None):
        self.graph, self.traversal = graph, traversal
        order = traversal.order
        fast = [n for n in order if n.op in _FAST]
        k_max = max((_reduction(n, graph.buffers) for n in fast), default=1)
        engine, self.engine_report = cpu_engines.choose(k_max) if fast else (None, [])
        self.engine = engine.name if engine is not None else cpu_engines.FLOAT
        narrow = None
        if engine is not None:
            narrow, lines = cpu_engines.narrow(k_max)
            self.engine_report += lines
        engines = {n.name: cpu_engines.for_layer(engine, narrow, graph.param(n, "w"),
                                                 graph.param(n, "w_zero_point")) for n in fast}
        self.paths = {}
        runs = []
        if engine is not None:
            lowerings = [cpu_fused.lowering(n, graph.buffers, traversal.shapes, engines.get(n.name))
                         for n in order]
            runs = cpu_fused.runs(order, lowerings, cpu_fused.fusing() if fuse is None else fuse)
        keep = {t.name for t in graph.outputs}
        run_at = {r[0]: r for r in runs if len(r) > 1}  # one node: the per-node path, same graph
        self.steps, i = [], 0
        while i < len(order):
            if i in run_at:
                r = run_at[i]
                after = keep | {t for n in order[r[-1] + 1:] for t in n.inputs}
                fused = cpu_fused.FusedRun([order[j] for j in r], [lowerings[j] for j in r], after)
                self.steps.append(Step(fused.nodes, fused.inputs, fused.outputs, fused, fused))
                self.paths.update({order[j].name: engines[order[j].name].name for j in r
                                   if order[j].op in _FAST})
                i = r[-1] + 1
                continue
            n = order[i]
            if n.op in _FAST:
                fn, self.paths[n.name] = _fast_step(n, graph.buffers, engines[n.name])
            else:
                fn = _step(n, graph.buffers)
            self.steps.append(_node_step(n, fn))
            i += 1
        if verbose:
            for line in self.engine_report:
                print(f"synapse: cpu engine {line}")
            counts = ", ".join(f"{e}: {sum(p == e for p in self.paths.values())}"
                               for e in sorted(set(self.paths.values())))
            print(f"synapse: cpu: conv/dense layers on {counts or 'none'}; {len(run_at)} fused "
                  f"onnxruntime graphs ({sum(map(len, run_at.values()))} of {len(order)} nodes)")
        last = {}
        for i, s in enumerate(self.steps):
            for t in s.inputs:
                last[t] = i
        self.drop_after = [[t for t in set(s.inputs) if last[t] == i and t not in keep]
                           for i, s in enumerate(self.steps)]
        self._out_names = [t.name for t in graph.outputs]
        self._one_step = len(self.steps) == 1 and keep <= set(self.steps[0].outputs)

    def wrap(self, select, wrapper):
        """Replace fn by wrapper(fn) for the nodes select(node) picks (tests break one
        op's kernel this way); they must be steps of their own (fuse=False)."""
        for s in self.steps:
            if any(select(n) for n in s.nodes):
                if s.fused is not None:
                    raise ValueError(f"node {s.nodes[0].name!r} is inside a fused graph: "
                                     "prepare with fuse=False")
                fn = wrapper(lambda *xs, f=s.fn: f(*xs)[0])
                s.fn = lambda *xs, fn=fn: [fn(*xs)]

    def run(self, feeds, trace=False):
        if self._one_step and not trace:  # one fused graph (a small network): no env
            s = self.steps[0]
            ys = dict(zip(s.outputs, s.fn(*[feeds[i] for i in s.inputs])))
            return {t: ys[t] for t in self._out_names}, None
        env = dict(feeds)
        steps = [] if trace else None
        for s, drop in zip(self.steps, self.drop_after):
            xs = [env[i] for i in s.inputs]
            if trace and s.fused is not None:
                every = s.fused.trace(*xs)
                steps += [(n.name, n.outputs[0], y) for n, y in zip(s.nodes, every)]
                env.update({n.outputs[0]: y for n, y in zip(s.nodes, every)})
            else:
                env.update(zip(s.outputs, s.fn(*xs)))
                if trace:
                    steps.append((s.nodes[0].name, s.outputs[0], env[s.outputs[0]]))
            for t in drop:
                if t not in feeds:
                    del env[t]
        return {t.name: env[t.name] for t in self.graph.outputs}, steps


def prepare(graph, traversal, verbose=False, fuse=None):
    return CpuExecutable(graph, traversal, verbose, fuse)


def node_functions(graph, traversal):
    """{node name: fn(*inputs) -> output}: every node on its own (no fused graphs)."""
    exe = prepare(graph, traversal, fuse=False)
    return {s.nodes[0].name: (lambda fn: lambda *xs: fn(*xs)[0])(s.fn) for s in exe.steps}
