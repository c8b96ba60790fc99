"""Fused runs: the longest stretches of the traversal that onnxruntime can compute
exactly, each as ONE onnxruntime graph (one session, one thread pool, every batch size).

Inside a run activations stay uint8 codes (int8 + 128, cpu_ort.py), converted once at
its boundary, and channels last between convs (the Transposes are placed where a
layout change is needed, once per tensor). Graph optimizations are off: the nodes run
as written. Why each lowering gives the reference's bits:
- conv1d, conv2d, dense: cpu_ort's lowerings, the very nodes the engine's self-test
  (cpu_engines.py) admitted on this machine, built by the same functions.
- add, mul, requantize, batchnorm, prelu: GatherElements from the op's table over its whole
  input domain (cpu_tables.domain_table: the reference evaluated on every input), in
  code order, at index Cast(a) * 256 + Cast(b), Cast(x), or Cast(x) + 256 c: int32
  arithmetic below 2^16, exact; exact by construction on every machine, no rule
  re-implemented (onnxruntime's QLinearAdd is not used: its vector and scalar paths
  are not proven equal to the rule).
- relu, clip: Clip on uint8 codes (max/min with z_x + 128, qmin/qmax + 128): order is
  kept by the +128 shift.
- max_pool: MaxPool (NhwcMaxPool on a channels-last view) on uint8 codes: the max of
  the valid taps; onnxruntime skips padded taps, the reference pads with -128, which
  never wins (tests/test_cpu_fused.py checks pads, strides, dilations, ceil_mode).
- avg_pool: the tap sum of the codes, as int32 Pad (with the code of z_x, which adds
  0) and one strided Slice + Add per tap (|sum| <= 255 taps), indexes a table of the
  output for every possible sum and tap count (cpu_pool.avg_pool_round, the rounding
  the numpy path uses), one row per distinct count: exact by construction.
- global_avg_pool: Cast to int32, ReduceSum over the spatial axes (|sum| <= 255 n <
  2^31), bias -n (z_x + 128) so the sum is sum (x - z_x), then the dense layer's
  requantization nodes (cpu_ort.lower_requant, self-tested): the reference's rule
  requant(sum; M) with M = m 2^-k exactly a float32 in cpu_ort.M_RANGE.
- reshape, flatten, transpose, identity: the ONNX ops (reshape's batch entry becomes 0, "copy").
Every other op, and a layer the graphs cannot express, stays a step of its own on the
numpy path (cpu.py) and ends the run.
$SYNAPSE_CPU_FUSE=0: no fusion, every conv/dense its own one-node graph (the per-layer
path, for comparison).
"""
from __future__ import annotations

import os

import numpy as np

from .. import registry
from . import cpu_ort, cpu_pool, cpu_tables
from .cpu_conv import multiplier_f32

FUSE_ENV = "SYNAPSE_CPU_FUSE"
LAYERS = {"conv1d", "conv2d", "dense"}
SHAPE_OPS = {"reshape", "flatten", "transpose", "identity"}
MAX_TABLE = 1 << 22  # entries of an avg_pool table (tap sums x distinct tap counts)


def fusing():
    return os.environ.get(FUSE_ENV, "1") != "0"


def _cast(g, x, layout):
    from onnx import TensorProto

    return g.op("Cast", [g.view(x, layout)], to=TensorProto.INT32)


def _gather(g, table, index, rank, layout):
    """uint8 codes table[index] (table in code order, int8 values). GatherElements on the
    flattened index: onnxruntime's Gather copies element by element through memcpy
    (measured about 10x slower)."""
    flat = g.op("Reshape", [index, g.const(np.array([1, -1]))])
    y = g.op("GatherElements", [g.const(cpu_ort.to_u8(table.reshape(1, -1))), flat], axis=1)
    return g.value(g.op("Reshape", [y, g.op("Shape", [index])]), rank, layout)


def _lower_table(node, buffers, shapes):
    """The table is made when the graph is built (a node left on the numpy path makes its
    own)."""
    rank = len(shapes[0])
    if node.op in ("add", "mul"):
        same = shapes[0] == shapes[1]

        def pair(g, a, b):  # ONNX broadcasting where the shapes differ: NCHW for both
            layout = g.layout(a) if same else "nchw"
            idx = g.op("Add", [g.op("Mul", [_cast(g, a, layout), g.const(np.int32(256))]),
                               _cast(g, b, layout)])
            return _gather(g, cpu_tables.domain_table(node, buffers), idx, max(rank, len(shapes[1])),
                           layout)
        return pair
    if node.op == "requantize":
        return lambda g, x: _gather(g, cpu_tables.domain_table(node, buffers),
                                    _cast(g, x, g.layout(x)), rank, g.layout(x))

    def per_channel(g, x):  # batchnorm, prelu: row c * 256 + code
        table = cpu_tables.domain_table(node, buffers)
        layout = g.layout(x)
        C = len(table)
        rows = np.arange(C, dtype=np.int32) * 256
        shape = [1] * rank
        shape[rank - 1 if layout == "nhwc" else 1] = C
        idx = g.op("Add", [_cast(g, x, layout), g.const(rows.reshape(shape))])
        return _gather(g, table, idx, rank, layout)
    return per_channel


def _clip(lo, hi, rank):
    def clip(g, x):
        y = g.op("Clip", [g.view(x, g.layout(x)), g.const(np.uint8(lo + 128)),
                          g.const(np.uint8(hi + 128))])
        return g.value(y, rank, g.layout(x))
    return clip


def _lower_max_pool(kw, rank):
    nd = rank - 2
    attrs = dict(kernel_shape=list(kw["kernel_shape"]), strides=list(kw.get("strides") or [1] * nd),
                 pads=list(kw.get("pads") or [0] * 2 * nd),
                 dilations=list(kw.get("dilations") or [1] * nd), ceil_mode=int(kw.get("ceil_mode", 0)))

    def max_pool(g, x):
        if rank == 4:
            return g.value(g.op("NhwcMaxPool", [g.view(x, "nhwc")], domain="com.microsoft", **attrs),
                           rank, "nhwc")
        return g.value(g.op("MaxPool", [g.view(x, "nchw")], **attrs), rank)
    return max_pool


def _lower_avg_pool(kw, shape):
    rank, kernel = len(shape), [int(k) for k in kw["kernel_shape"]]
    strides, dilations, outs, ends, count = cpu_pool.avg_pool_counts(
        shape[2:], kernel, kw.get("strides"), kw.get("pads"), kw.get("dilations"),
        kw.get("ceil_mode", 0), kw.get("count_include_pad", 0))
    taps = int(np.prod(kernel))
    span = 2 * 255 * taps + 1  # tap sums of x - z_x: [-255 taps, 255 taps]
    counts, cid = np.unique(count, return_inverse=True)
    if span * len(counts) > MAX_TABLE:
        return None
    table = cpu_pool.avg_pool_round(np.arange(-255 * taps, 255 * taps + 1)[None, :], counts[:, None],
                                    kw["multiplier"], kw["shift"], kw["y_zero_point"],
                                    kw.get("qmin", -128), kw.get("qmax", 127))
    zc = int(kw["x_zero_point"]) + 128  # a padded tap holds the code of x = z_x: it adds 0
    # index: the sum of the codes (= sum (x - z_x) + taps zc) shifted into row cid
    offset = (255 * taps - taps * zc + span * cid.reshape(count.shape)).astype(np.int32)

    def avg_pool(g, x):
        layout = g.layout(x)
        axes = list(range(1, rank - 1)) if layout == "nhwc" else list(range(2, rank))
        xi = _cast(g, x, layout)
        if any(b or e for b, e in ends):
            pads = [0] * (2 * rank)
            for a, (b, e) in zip(axes, ends):
                pads[a], pads[rank + a] = b, e
            xi = g.op("Pad", [xi, g.const(np.array(pads)), g.const(np.int32(zc))])
        total = None
        for tap in np.ndindex(*kernel):  # one strided Slice per tap, int32 sums < 2^31
            starts = [t * d for t, d in zip(tap, dilations)]
            stops = [b + (o - 1) * s + 1 for b, o, s in zip(starts, outs, strides)]
            view = g.op("Slice", [xi, g.const(np.array(starts)), g.const(np.array(stops)),
                                  g.const(np.array(axes)), g.const(np.array(strides))])
            total = view if total is None else g.op("Add", [total, view])
        grid = offset[None, ..., None] if layout == "nhwc" else offset[None, None]
        return _gather(g, table, g.op("Add", [total, g.const(grid)]), rank, layout)
    return avg_pool


def _lower_gap(kw, shape):
    M32 = multiplier_f32(kw["multiplier"], kw["shift"])
    if not cpu_ort.in_range(M32):
        return None
    C, n, rank = shape[1], int(np.prod(shape[2:])), len(shape)
    bias = np.full(C, -n * (int(kw["x_zero_point"]) + 128), np.int32)  # |sum| <= 255 n

    def gap(g, x):
        layout = g.layout(x)
        axes = list(range(1, rank - 1)) if layout == "nhwc" else list(range(2, rank))
        total = g.op("ReduceSum", [_cast(g, x, layout), g.const(np.array(axes))], keepdims=0)
        y = cpu_ort.lower_requant(g, total, bias, np.full(C, M32.reshape(-1)[0], np.float32),
                                  kw["y_zero_point"], kw.get("qmin", -128), kw.get("qmax", 127))
        return g.value(g.op("Reshape", [y, g.const(np.array([0, C] + [1] * (rank - 2)))]), rank)
    return gap


def _lower_shape_op(node, kw):
    if node.op == "reshape":
        target = np.array([0] + [int(d) for d in kw["shape"][1:]])
        return lambda g, x: g.value(g.op("Reshape", [g.view(x, "nchw"), g.const(target)]), len(target))
    if node.op == "flatten":
        return lambda g, x: g.value(g.op("Flatten", [g.view(x, "nchw")], axis=int(kw.get("axis", 1))), 2)
    perm = [int(p) for p in kw["perm"]]
    return lambda g, x: g.value(g.op("Transpose", [g.view(x, "nchw")], perm=perm), len(perm))


def lowering(node, buffers, shapes, engine):
    """fn(graph, *input handles) -> output handle computing `node` exactly, or None."""
    kw = registry.node_kwargs(node, buffers)
    ins = [shapes[t] for t in node.inputs]
    if node.op in LAYERS:
        M32 = multiplier_f32(kw["multiplier"], kw["shift"])
        if node.op == "dense":
            if not cpu_ort.in_range(M32):
                return None
            return lambda g, x: cpu_ort.lower_dense(g, x, ins[0], engine.weight_dtype, M32, **kw)
        if not cpu_ort.conv_lowerable(M32, kw):
            return None
        return lambda g, x: cpu_ort.lower_conv(g, x, ins[0], engine.weight_dtype, M32, **kw)
    if node.op in cpu_tables.TABLE_OPS:
        return _lower_table(node, buffers, ins)
    if node.op == "relu":
        return _clip(int(kw["x_zero_point"]), 127, len(ins[0]))
    if node.op == "clip":
        return _clip(int(kw.get("qmin", -128)), int(kw.get("qmax", 127)), len(ins[0]))
    if node.op == "max_pool":
        return _lower_max_pool(kw, len(ins[0]))
    if node.op == "avg_pool":
        return _lower_avg_pool(kw, ins[0])
    if node.op == "global_avg_pool":
        return _lower_gap(kw, ins[0])
    if node.op == "identity":
        return lambda g, x: g.value(g.op("Identity", [g.view(x, g.layout(x))]), len(ins[0]),
                                    g.layout(x))
    if node.op in SHAPE_OPS:
        return _lower_shape_op(node, kw)
    return None


class FusedRun:
    """Consecutive traversal nodes as one graph: call with the int8 tensors `inputs`
    (read inside, made outside), get the int8 tensors `outputs` (made inside, read after
    the run or graph outputs)."""

    def __init__(self, nodes, lowerings, needed_after):
        self.nodes, self.lowerings = nodes, lowerings
        made = {o for n in nodes for o in n.outputs}
        self.inputs = list(dict.fromkeys(t for n in nodes for t in n.inputs if t not in made))
        self.outputs = [o for n in nodes for o in n.outputs if o in needed_after]
        self.run = cpu_ort.OrtRun(lambda g, hs, _: self._build(g, hs, self.outputs))
        self._trace = None

    def _build(self, g, handles, outputs):
        env = dict(zip(self.inputs, handles))
        for n, lower in zip(self.nodes, self.lowerings):
            env[n.outputs[0]] = lower(g, *[env[t] for t in n.inputs])
        return [env[t] for t in outputs]

    def __call__(self, *xs):
        return self.run(*xs)

    def trace(self, *xs):
        """Every node's output, in node order: a second graph that returns them all."""
        if self._trace is None:
            every = [n.outputs[0] for n in self.nodes]
            self._trace = cpu_ort.OrtRun(lambda g, hs, _: self._build(g, hs, every))
        return self._trace(*xs)


def runs(order, lowerings, fuse):
    """Index lists of the fused runs over `order` (lowerings[i] None: not lowerable).
    A run needs one op that is not a shape op; fuse=False: each conv/dense alone."""
    out, cur = [], []
    for i, n in enumerate(order):
        if lowerings[i] is not None and (fuse or n.op in LAYERS):
            cur.append(i)
            if fuse:
                continue
        if cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return [r for r in out if any(order[i].op not in SHAPE_OPS for i in r)]
