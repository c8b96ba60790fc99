"""Graphs that exercise every CUDA kernel, shared by the host and the GPU tests.

op_cases(): single-node graphs, parametrized over shapes, strides, pads,
dilations, groups, zero points at both ends of the int8 range, per-channel and
per-tensor multipliers, and edge multipliers (tiny, huge, 1). model_cases():
small whole models. Each case builds (graph, feeds) from a seed; the expected
output comes from the numpy reference (reference_run), node by node.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from synapse_gpu import build, registry
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.graph import GraphBuilder
from synapse_gpu.reference.elementwise import add_params
from synapse_gpu.reference.requant import quantize_multiplier
from synapse_gpu.reference.softmax import softmax_params
from synapse_gpu.validate import validate

BATCH = 3


def qm(M):
    m, k = quantize_multiplier(np.float32(M) if np.ndim(M) == 0 else np.asarray(M, np.float32))
    return m.astype(np.int64), k.astype(np.int64)


def sqm(M):
    m, k = qm(M)
    return int(m), int(k)


def i8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def feed_shape(shape, batch):
    return tuple(batch if i == 0 and d == -1 else d for i, d in enumerate(shape))


def single(op, in_shapes, attrs=None, params=None, feed_range=(-128, 127)):
    """A graph of one node reading graph inputs x0, x1, ... of the given shapes.

    feed_range narrows the random inputs (for cases that need equal values, ties).
    """
    b = GraphBuilder()
    xs = [b.add_input(f"x{i}", s, 1.0, 0) for i, s in enumerate(in_shapes)]
    y = b.add_node(op, xs, attrs=attrs or {}, params=params or {}, out_quant=(1.0, 0))
    b.add_output(y)
    return b.build({"feed_range": f"{feed_range[0]},{feed_range[1]}"})


def feeds_for(graph, rng, batch=BATCH):
    lo, hi = (int(v) for v in graph.metadata.get("feed_range", "-128,127").split(","))
    return {t.name: _token_ids(graph, t, rng, batch) if t.dtype == "int64" else
            rng.integers(lo, hi + 1, feed_shape(t.shape, batch)).astype(np.int8)
            for t in graph.inputs}


def _token_ids(graph, t, rng, batch):
    """Packed token ids over the whole vocabulary of the tables that read them, both ends."""
    from synapse_gpu.reference.embedding import pack_ids
    from synapse_gpu.session import _token_vocab
    from token_models import random_ids

    return pack_ids(random_ids(rng, feed_shape(t.shape[:-1], batch), _token_vocab(graph)[t.name]))


def _embedding(seq, vocab, dim):
    """embedding rows by token id (int64 input, carried as 4 bytes per id)."""
    def make(rng, zx, zy):
        b = GraphBuilder()
        t = b.add_input("x0", (-1, *seq, 4), 1.0, 0, dtype="int64")
        b.add_output(b.add_node("embedding", [t], params={"table": i8(rng, (vocab, dim))},
                                out_quant=(1.0, zy)))
        return b.build()
    return make


def traversal(graph):
    return validate(graph, strict=False).traversal


def reference_run(graph, trav, feeds):
    """Every node by its numpy reference, in order: {tensor: int8 array}."""
    env = dict(feeds)
    for n in trav.order:
        env[n.outputs[0]] = registry.call(registry.reference_op(n.op), n,
                                          [env[i] for i in n.inputs], graph.buffers)
    return env


# ------------------------------------------------------------------ single ops

# (input zero point, output zero point): both ends of the int8 range, and odd ones
# (a tie rounds differently when z_y joins before the rounding: add, mul, avg_pool).
ZPS = [(-128, -128), (-37, 1), (0, 0), (1, -37), (127, 127), (-128, 127)]


def _conv(nd, C, M, group, sp, k, strides, pads, dil, per_channel):
    def make(rng, zx, zy):
        K = C // group * math.prod(k)
        w = i8(rng, (M, C // group, *k))
        wz = rng.integers(-4, 5, M).astype(np.int32) if per_channel else np.zeros(M, np.int32)
        base = 0.01 / math.sqrt(K)
        mult = rng.uniform(0.5, 2, M) * base if per_channel else np.full(M, base)
        m, s = qm(mult.astype(np.float32))
        lo = zy if zy < 100 else -128  # a fused ReLU narrows the clamp
        return single(f"conv{nd}d", [(-1, C, *sp)], dict(
            x_zero_point=zx, y_zero_point=zy, strides=strides, pads=pads, dilations=dil,
            group=group, qmin=lo, qmax=127), dict(
            w=w, bias=rng.integers(-50000, 50000, M).astype(np.int32), multiplier=m, shift=s,
            w_zero_point=wz))
    return make


CONV = {
    "1d_s2_asympad": _conv(1, 3, 4, 1, (11,), (3,), [2], [1, 2], [1], True),
    "1d_depthwise_dil2": _conv(1, 4, 4, 4, (9,), (3,), [1], [2, 2], [2], False),
    "2d_3x3_same": _conv(2, 3, 5, 1, (7, 7), (3, 3), [1, 1], [1, 1, 1, 1], [1, 1], True),
    "2d_group2_strided_dilated": _conv(2, 4, 6, 2, (8, 6), (3, 2), [2, 1], [0, 1, 2, 0],
                                       [1, 2], True),
    "2d_depthwise_mult2": _conv(2, 6, 12, 6, (9, 9), (3, 3), [2, 2], [1, 1, 1, 1], [1, 1], True),
    "2d_1x1": _conv(2, 8, 3, 1, (5, 4), (1, 1), [1, 1], [0, 0, 0, 0], [1, 1], False),
    "2d_pad_exceeds_kernel": _conv(2, 2, 3, 1, (3, 3), (2, 2), [1, 1], [3, 2, 2, 3], [1, 1], True),
    "3d": _conv(3, 2, 3, 1, (4, 5, 5), (2, 3, 3), [1, 2, 1], [0, 1, 1, 1, 0, 1], [1, 1, 2], True),
}


def _dense(x_shape, K, M, trans_w, per_channel):
    def make(rng, zx, zy):
        w = i8(rng, (M, K) if trans_w else (K, M))
        wz = rng.integers(-3, 4, M).astype(np.int32) if per_channel else np.zeros(M, np.int32)
        mult = rng.uniform(0.5, 2, M) * 0.01 / math.sqrt(K)
        m, s = qm(mult.astype(np.float32) if per_channel else np.full(M, mult[0], np.float32))
        return single("dense", [x_shape], dict(x_zero_point=zx, y_zero_point=zy,
                                               trans_w=int(trans_w), qmin=-128, qmax=127),
                      dict(w=w, bias=rng.integers(-9000, 9000, M).astype(np.int32), multiplier=m,
                           shift=s, w_zero_point=wz))
    return make


DENSE = {
    "rank2_trans": _dense((-1, 20), 20, 7, True, True),
    "rank2_plain": _dense((-1, 13), 13, 5, False, False),
    "rank3_trans": _dense((-1, 4, 9), 9, 6, True, True),
}


def _matmul(a_shape, b_shape):
    def make(rng, zx, zy):
        m, s = sqm(0.015 / a_shape[-1])  # the zero points shift the mean: |acc| ~ K 128 63
        return single("matmul", [a_shape, b_shape], dict(
            a_zero_point=zx, b_zero_point=63 if zx else 0, y_zero_point=zy, multiplier=m, shift=s))
    return make


MATMUL = {
    "3d": _matmul((-1, 4, 6), (-1, 6, 5)),
    "4d_broadcast": _matmul((-1, 2, 3, 7), (-1, 1, 7, 4)),
    "fixed_b": _matmul((-1, 2, 3, 5), (1, 2, 5, 3)),
}

MULTIPLIERS = {  # float32 M: ordinary, 1, 1/2 (ties), tiny (k >= 63), subnormal, huge (k < 0), 0
    "ordinary": 0.37, "one": 1.0, "half": 0.5, "tiny": 1e-25, "subnormal": 1e-41, "huge": 3e9,
    "zero": 0.0,
}
CONSTANT_BY_DESIGN = {"requantize_tiny", "requantize_subnormal", "requantize_zero"}


def _requantize(M):
    def make(rng, zx, zy):
        m, s = sqm(M)
        return single("requantize", [(-1, 4, 5)], dict(x_zero_point=zx, y_zero_point=zy,
                                                        multiplier=m, shift=s))
    return make


def _per_channel_op(op, shape):
    def make(rng, zx, zy):
        C = shape[1]
        m, s = qm(rng.uniform(0.002, 0.02, C).astype(np.float32))
        lo = max(-128, zy - 50)
        if op == "batchnorm":
            params = dict(scale=i8(rng, C), bias=rng.integers(-3000, 3000, C).astype(np.int32),
                          multiplier=m, shift=s)
            attrs = dict(x_zero_point=zx, y_zero_point=zy, qmin=lo, qmax=127)
        else:
            pm, ps = sqm(rng.uniform(0.3, 1.5))
            params = dict(slope=i8(rng, C), multiplier=m, shift=s)
            attrs = dict(x_zero_point=zx, y_zero_point=zy, pos_multiplier=pm, pos_shift=ps,
                         qmin=lo, qmax=127)
        return single(op, [shape], attrs, params)
    return make


def _binary(op, a_shape, b_shape, sa=0.05, sb=0.03, sy=0.06):
    def make(rng, zx, zy):
        attrs = dict(a_zero_point=zx, b_zero_point=-1 - zx // 2, y_zero_point=zy,
                     qmin=-128, qmax=127)
        if op == "add":
            a_first = int(a_shape[-1] == 1 < abs(b_shape[-1]))  # build._a_broadcast_innermost
            attrs.update(add_params(sa, zx, sb, attrs["b_zero_point"], sy, zy,
                                    128 * (zx % 2), a_first))
        else:
            attrs["multiplier"], attrs["shift"] = sqm(np.float32(sa) * np.float32(sb) / np.float32(sy))
        return single(op, [a_shape, b_shape], attrs)
    return make


def _softmax(shape, axis, s_x, s_y=1 / 256, feed_range=(-128, 127)):
    def make(rng, zx, zy):
        p = softmax_params(s_x, s_y, zy)
        table = p.pop("exp_table")
        return single("softmax", [shape], dict(axis=axis, **p), dict(exp_table=table),
                      feed_range)
    return make


def _pool(op, sp, k, strides=None, pads=None, dil=None, ceil_mode=0, include_pad=0, ratio=None):
    """ratio: s_x / s_y of avg_pool (1.0 and a power-of-two window make exact ties)."""
    def make(rng, zx, zy):
        attrs = dict(kernel_shape=list(k), ceil_mode=ceil_mode)
        for key, v in (("strides", strides), ("pads", pads), ("dilations", dil)):
            if v is not None:
                attrs[key] = list(v)
        params = {}
        if op == "avg_pool":
            V = math.prod(k)
            counts = np.arange(V + 1, dtype=np.float32)
            counts[0] = 1
            m, s = qm(np.float32(ratio or rng.uniform(0.5, 2)) / counts)
            params = dict(multiplier=m, shift=s)
            attrs.update(count_include_pad=include_pad, x_zero_point=zx, y_zero_point=zy)
        return single(op, [(-1, 2, *sp)], attrs, params)
    return make


def _gap(shape, ratio=None):
    def make(rng, zx, zy):
        m, s = sqm(np.float32(ratio or rng.uniform(0.5, 2)) / np.float32(math.prod(shape[2:])))
        return single("global_avg_pool", [shape], dict(x_zero_point=zx, y_zero_point=zy,
                                                        multiplier=m, shift=s))
    return make


def _concat(shapes, axis):
    def make(rng, zx, zy):
        ms, ks = zip(*[sqm(v) for v in (1.0, 0.7, 1.9)[:len(shapes)]])  # 1.0: a plain copy
        return single("concat", shapes, dict(axis=axis, x_zero_points=[zx, 0, -zx // 2][:len(shapes)],
                                             multipliers=list(ms), shifts=list(ks),
                                             y_zero_point=zy))
    return make


def _plain(op, in_shape, **attrs):
    """attrs may be functions of the zero points (zx, zy)."""
    def make(rng, zx, zy):
        a = {k: (v(zx, zy) if callable(v) else v) for k, v in attrs.items()}
        params = {"table": i8(rng, 256)} if op == "lut" else {}
        return single(op, [in_shape], a, params)
    return make


def _take(in_shape, lists):
    """take along every per-sample axis: index lists (slices with steps, repeats, reversals)."""
    def make(rng, zx, zy):
        return single("take", [in_shape], {"sizes": [len(v) for v in lists]},
                      {"indices": np.concatenate(lists).astype(np.int32)})
    return make


def _lrn(in_shape, size, alpha):
    """lrn: channel windows clipped at both ends, zero points at both ends of the range."""
    def make(rng, zx, zy):
        from synapse_gpu.reference.lrn import lrn_params
        p = lrn_params(0.05, zx, 0.03, zy, size, alpha, 0.75, 1.0, channels=in_shape[1])
        return single("lrn", [in_shape], dict(size=size, x_zero_point=zx), p)
    return make


def _layernorm(in_shape, axis, rows=None):
    """layernorm over the trailing axes, gains of both signs; rows: one gain per row
    (InstanceNormalization's form) for that many rows per sample."""
    def make(rng, zx, zy):
        from synapse_gpu.reference.layernorm import layernorm_params
        n = math.prod(in_shape[axis:])
        shape = (rows, 1) if rows else (n,)
        p, a = layernorm_params(rng.uniform(-2, 2, shape), rng.normal(0, 0.5, shape), 1e-5, 0.05,
                                0.03, n=n)
        return single("layernorm", [in_shape],
                      dict(axis=axis, x_zero_point=zx, y_zero_point=zy, **a), p)
    return make


def _resize_linear(in_shape, lists):
    """resize_linear: per axis (lo, hi, weight) lists; weights 0, 2^8 and between."""
    def make(rng, zx, zy):
        m, k = sqm(0.7)
        return single("resize_linear", [in_shape], dict(
            sizes=[len(w) for _, _, w in lists], frac_bits=[0, 8, 8][-len(lists):], x_zero_point=zx,
            y_zero_point=zy,
            multiplier=m, shift=k), dict(
            indices=np.concatenate([np.r_[lo, hi] for lo, hi, _ in lists]).astype(np.int32),
            weights=np.concatenate([w for _, _, w in lists]).astype(np.int32)))
    return make


def _all_ops():
    cases = {}
    cases.update({f"conv_{k}": v for k, v in CONV.items()})
    cases.update({f"dense_{k}": v for k, v in DENSE.items()})
    cases.update({f"matmul_{k}": v for k, v in MATMUL.items()})
    cases.update({f"requantize_{k}": _requantize(M) for k, M in MULTIPLIERS.items()})
    cases.update({
        "batchnorm_4d": _per_channel_op("batchnorm", (-1, 5, 3, 4)),
        "batchnorm_2d": _per_channel_op("batchnorm", (-1, 7)),
        "prelu_4d": _per_channel_op("prelu", (-1, 4, 3, 3)),
        "prelu_3d": _per_channel_op("prelu", (-1, 6, 5)),
        "relu": _plain("relu", (-1, 3, 4, 5), x_zero_point=lambda zx, zy: zx),
        "clip": _plain("clip", (-1, 3, 7), qmin=lambda zx, zy: min(zx, zy),
                       qmax=lambda zx, zy: max(zx, zy)),
        "lut": _plain("lut", (-1, 2, 3, 5), fn="random"),
        "add_same": _binary("add", (-1, 3, 4, 5), (-1, 3, 4, 5)),
        "add_channel_broadcast": _binary("add", (-1, 3, 4, 5), (-1, 3, 1, 1)),
        "add_batch_broadcast": _binary("add", (1, 3, 1, 5), (-1, 1, 4, 5), 0.02, 0.09, 0.05),
        "add_a_first": _binary("add", (-1, 3, 4, 1), (-1, 3, 4, 5), 0.07, 0.03, 0.05),
        "add_pow2_ties": _binary("add", (-1, 4, 6), (-1, 4, 6), 0.5, 0.25, 1.0),
        "add_huge_multiplier": _binary("add", (-1, 6), (-1, 6), 1.0, 0.5, 2e-8),
        "add_tiny_multiplier": _binary("add", (-1, 6), (-1, 6), 1e-2, 1e-15, 1.0),
        "mul_same": _binary("mul", (-1, 2, 3, 4), (-1, 2, 3, 4)),
        "mul_se_broadcast": _binary("mul", (-1, 4, 3, 3), (-1, 4, 1, 1), 0.02, 1 / 256, 0.01),
        "mul_pow2_ties": _binary("mul", (-1, 5, 6), (-1, 5, 6), 0.125, 0.125, 1.0),
        "softmax_2d": _softmax((-1, 10), 1, 0.1),
        "softmax_last_axis": _softmax((-1, 3, 17), -1, 0.05),
        "softmax_inner_axis": _softmax((-1, 6, 4, 2), 1, 0.3),
        # equal pairs and R = floor(1 / s_y) = 249: e R / S = 124.5, an exact tie
        "softmax_ties": _softmax((-1, 8, 2), -1, 0.1, 1 / 249, (0, 1)),
        "max_pool_2d": _pool("max_pool", (7, 7), (3, 3), (2, 2), (1, 1, 1, 1)),
        "max_pool_2d_ceil_dilated": _pool("max_pool", (8, 7), (2, 3), (3, 2), (0, 1, 1, 0),
                                          (2, 1), ceil_mode=1),
        "max_pool_1d_empty_windows": _pool("max_pool", (3,), (2,), (1,), (3, 3)),
        "max_pool_3d": _pool("max_pool", (4, 5, 4), (2, 2, 2), (2, 2, 1), (0, 0, 1, 1, 1, 0)),
        "max_pool_defaults": _pool("max_pool", (6, 6), (2, 2)),
        "avg_pool_2d_exclude_pad": _pool("avg_pool", (7, 6), (3, 3), (2, 2), (1, 1, 1, 1)),
        "avg_pool_2d_include_pad": _pool("avg_pool", (7, 6), (3, 2), (2, 1), (1, 0, 1, 1),
                                         include_pad=1),
        "avg_pool_2d_ceil_include_pad": _pool("avg_pool", (8, 8), (3, 3), (2, 2), (1, 1, 1, 1),
                                              ceil_mode=1, include_pad=1),
        "avg_pool_2d_ties": _pool("avg_pool", (6, 6), (2, 2), (1, 1), (1, 0, 0, 1), ratio=1.0),
        "avg_pool_1d": _pool("avg_pool", (10,), (4,), (3,), (2, 1)),
        "avg_pool_3d": _pool("avg_pool", (3, 4, 5), (2, 2, 3), (1, 2, 2), (1, 0, 1, 0, 1, 1),
                             include_pad=1),
        # every axis has a last window reaching past the end padding (not counted)
        "avg_pool_3d_ceil_include_pad": _pool("avg_pool", (5, 5, 5), (3, 3, 3), (2, 2, 2),
                                              (1, 1, 1, 0, 0, 0), ceil_mode=1, include_pad=1),
        "global_avg_pool_2d": _gap((-1, 3, 5, 6)),
        "global_avg_pool_1d": _gap((-1, 4, 9)),
        "global_avg_pool_3d": _gap((-1, 2, 3, 4, 5)),
        "global_avg_pool_ties": _gap((-1, 3, 2, 2), ratio=1.0),
        "flatten": _plain("flatten", (-1, 3, 4, 2), axis=1),
        "reshape": _plain("reshape", (-1, 3, 4, 2), shape=[-1, 6, 4]),
        "identity": _plain("identity", (-1, 5, 2)),
        "transpose_nhwc": _plain("transpose", (-1, 3, 4, 5), perm=[0, 2, 3, 1]),
        "transpose_5d": _plain("transpose", (-1, 2, 3, 4, 5), perm=[0, 4, 2, 1, 3]),
        "concat_channels": _concat([(-1, 2, 3, 3), (-1, 4, 3, 3), (-1, 1, 3, 3)], 1),
        "concat_last_axis": _concat([(-1, 2, 5), (-1, 2, 3)], -1),
        "concat_middle_axis": _concat([(-1, 2, 1, 4), (-1, 2, 3, 4)], 2),
        "pad_constant": _plain("pad", (-1, 2, 4, 3), pads=[0, 0, 1, 2, 0, 1, 2, 0],
                               mode="constant", value=lambda zx, zy: zx),
        "pad_edge": _plain("pad", (-1, 2, 4, 3), pads=[0, 1, 2, 1, 0, 0, 1, 3], mode="edge"),
        "pad_reflect": _plain("pad", (-1, 3, 5), pads=[0, 1, 4, 0, 2, 3], mode="reflect"),
        "layernorm_last_axis": _layernorm((-1, 5, 24), 2),
        "layernorm_two_axes": _layernorm((-1, 3, 4, 6), 2),
        "layernorm_row_gains": _layernorm((-1, 3, 4, 6), 2, rows=3),
        "resize_linear_2d": _resize_linear((-1, 3, 4, 5), [
            ([0, 2, 1], [0, 2, 1], [0, 0, 0]),
            ([0, 0, 1, 2, 3], [1, 1, 2, 3, 3], [64, 192, 128, 0, 256]),
            ([0, 1, 1, 2, 3, 4], [1, 2, 2, 3, 4, 4], [85, 171, 256, 1, 255, 0])]),
        "resize_linear_1d": _resize_linear((-1, 6), [([0, 1, 2, 4, 5], [1, 2, 3, 5, 5],
                                                       [128, 128, 7, 250, 0])]),
        "lrn_2d": _lrn((-1, 7, 3, 4), 5, 0.05),
        "lrn_1d_wide": _lrn((-1, 4, 5), 6, 0.2),
        "take_slice_steps": _take((-1, 4, 7, 5), [[1, 2, 3], [6, 4, 2, 0], [0, 1, 2, 3, 4]]),
        "take_repeat": _take((-1, 3, 4), [[2, 0, 2], [0, 0, 1, 1, 2, 2, 3, 3]]),
        "embedding_tokens": _embedding((16,), 1000, 24),
        "embedding_2d_ids": _embedding((3, 5), 300, 7),
        "constant": lambda rng, zx, zy: single("constant", [(-1, 3)],
                                               params={"value": i8(rng, (4, 5))}),
        "pad_reflect_wider_than_axis": _plain("pad", (-1, 2, 3, 1), pads=[0, 0, 5, 2, 0, 1, 4, 3],
                                              mode="reflect"),
    })
    return cases


OP_CASES = _all_ops()


def op_params():
    """pytest params (case id x zero points) for every single-op case."""
    return [pytest.param(name, zx, zy, id=f"{name}-zx{zx}-zy{zy}")
            for name in OP_CASES for zx, zy in ZPS]


def op_case(name, zx, zy, seed=0, batch=BATCH):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zx + 128, zy + 128])
    graph = OP_CASES[name](rng, zx, zy)
    return graph, feeds_for(graph, rng, batch)


# ------------------------------------------------------------------ models

def kitchen_sink(seed=0):
    """An image model through conv, batchnorm, clip, pad, pools, lut, transpose, concat,
    a squeeze-excite mul, dense and softmax."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("image", (-1, 3, 12, 12), scale=1 / 64, zero_point=-5)
    h = build.conv(b, x, i8(rng, (8, 3, 3, 3)), rng.uniform(0.002, 0.01, 8).astype(np.float32),
                   rng.integers(-900, 900, 8).astype(np.int32), y_scale=0.05, y_zero_point=-7,
                   pads="same_upper", strides=[2, 2], relu=True)
    h = build.batchnorm(b, h, rng.uniform(0.5, 1.5, 8), rng.uniform(-0.2, 0.2, 8),
                        rng.uniform(-0.1, 0.1, 8), rng.uniform(0.5, 2, 8), y_scale=0.04,
                        y_zero_point=2)
    h = build.clip(b, h, 0.0, 3.0)
    h = build.pad(b, h, [0, 0, 1, 1, 0, 0, 1, 1], mode="reflect")
    h = build.max_pool(b, h, [3, 3], strides=[2, 2], ceil_mode=1)
    s = build.unary(b, h, "sigmoid", y_scale=1 / 256, y_zero_point=-128)
    t = build.transpose(b, h, [0, 2, 3, 1])
    t = build.transpose(b, t, [0, 3, 1, 2])
    h = build.concat(b, [t, s], 1, y_scale=0.03, y_zero_point=-1)
    g = build.global_avg_pool(b, h, y_scale=0.02, y_zero_point=0)
    g = build.unary(b, g, "hard_sigmoid", alpha=0.2, beta=0.5, y_scale=1 / 255, y_zero_point=-128)
    h = build.mul(b, h, g, y_scale=0.02, y_zero_point=3)
    h = build.avg_pool(b, h, [2, 2], strides=[1, 1], pads=[0, 0, 1, 1], count_include_pad=1,
                       y_scale=0.02, y_zero_point=1)
    h = build.flatten(b, h)
    h = build.dense(b, h, i8(rng, (10, b.shapes[h][1])), rng.uniform(0.001, 0.004, 10)
                    .astype(np.float32), rng.integers(-300, 300, 10).astype(np.int32),
                    y_scale=0.1, y_zero_point=0)
    h = build.softmax(b, h)
    b.add_output(h, "probs")
    return b.build({"name": "kitchen_sink"})


def attention(seed=0, T=6, D=8):
    """A one-head attention block: dense projections, matmul, softmax, residual add."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("tokens", (-1, T, D), scale=0.05, zero_point=3)

    def proj(name):
        return build.dense(b, x, i8(rng, (D, D)), rng.uniform(0.002, 0.01, D).astype(np.float32),
                           None, y_scale=0.05, y_zero_point=0, name=name)

    q, k, v = proj("q"), proj("k"), proj("v")
    kt = build.transpose(b, k, [0, 2, 1])
    s = build.matmul(b, q, kt, y_scale=0.2, y_zero_point=-3)
    p = build.softmax(b, s, axis=-1)
    o = build.matmul(b, p, v, y_scale=0.05, y_zero_point=1)
    o = build.add(b, o, x, y_scale=0.07, y_zero_point=-2)
    o = build.reshape(b, o, [T * D])
    b.add_output(o, "out")
    b.add_output(s, "scores")
    return b.build({"name": "attention"})


MODELS = {
    "tiny_cnn": lambda seed: tiny_cnn(seed=seed),
    "kitchen_sink": kitchen_sink,
    "attention": attention,
}


def model_case(name, batch=BATCH, seed=0):
    graph = MODELS[name](seed)
    return graph, feeds_for(graph, np.random.default_rng([seed, batch, zlib.crc32(name.encode())]), batch)
