"""CUDA backend, op launchers: a node and its concrete shapes -> kernel launches.

Each launch names its kernel, its thread count (one thread per output element)
and its arguments in the kernel's parameter order, symbolically: Act (an
activation view), Param (a parameter buffer), Table (a small int64 table) or an
int (a long long scalar); cuda_kernels/synapse_int.cuh gives the convention.
`lower` checks every launch against the signature parsed from the .cu source.
Pure Python: nothing here touches a device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedOpError
from ..reference.conv import resolve_pads
from .cuda_source import kernel_signatures

_PAD_MODES = {"constant": 0, "edge": 1, "reflect": 2}  # SYN_PAD_* in shape.cu


@dataclass(frozen=True)
class Act:
    """An activation tensor: a view of its slot (int8)."""
    name: str


@dataclass(frozen=True)
class Param:
    """A parameter buffer as the kernel's element type, uploaded once per executable."""
    buffer: str
    dtype: str  # "int8" | "int32" | "int64"


@dataclass(frozen=True)
class Table:
    """A small int64 table (shapes, strides), uploaded once per batch size."""
    values: tuple


@dataclass(frozen=True)
class Launch:
    kernel: str
    n: int  # threads = elements written
    args: tuple  # Act / Param / Table / int, in the kernel's parameter order
    trace_only: bool = False  # issued on trace runs only (cuda_variants.Layout)


@dataclass(frozen=True)
class Copy:
    """flatten, reshape, identity: the bytes are already in row-major order."""
    src: str
    dst: str


_KIND_OF = {"int8": "i8*", "int32": "i32*", "int64": "i64*"}


def check_launch(launch, out):
    """Raise if a launch does not match its kernel's parameters (count, pointer types,
    and the output pointer receiving the node's output ``out``)."""
    sigs = kernel_signatures()
    if launch.kernel not in sigs:
        raise RuntimeError(f"no kernel {launch.kernel} in cuda_kernels/")
    family, kinds = sigs[launch.kernel]
    got = []
    for a in launch.args:
        if isinstance(a, Act):
            got.append("out" if a.name == out else "i8*")
        elif isinstance(a, Param):
            got.append(_KIND_OF[a.dtype])
        elif isinstance(a, Table):
            got.append("i64*")
        elif isinstance(a, (int, np.integer)) and not isinstance(a, bool):
            got.append("i64")
        else:
            raise RuntimeError(f"{launch.kernel}: argument {a!r} of unknown kind")
    if got != kinds:
        raise RuntimeError(f"{family}.cu: {launch.kernel} takes {kinds}, the backend packs {got}")


def concrete(shape, batch):
    """A planned shape with the batch (-1 on axis 0) replaced by the actual batch size."""
    return tuple(batch if i == 0 and d == -1 else int(d) for i, d in enumerate(shape))


def _row_major(shape):
    strides, s = [], 1
    for d in reversed(shape):
        strides.append(s)
        s *= d
    return strides[::-1]


def _broadcast_strides(shape, out, unit=1):
    """Strides (in elements, times ``unit``) of a tensor of ``shape`` along the axes of
    the numpy-broadcast ``out``: 0 where the tensor is broadcast or missing."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    return [0 if d == 1 else s * unit for d, s in zip(shape, _row_major(shape))]


def _qrange(a):
    return int(a.get("qmin", -128)), int(a.get("qmax", 127))


def _lower_conv(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs, ys, ws = S[x], S[y], P["w"].shape
    nd = len(xs) - 2
    strides = [int(v) for v in a.get("strides") or [1] * nd]
    dil = [int(v) for v in a.get("dilations") or [1] * nd]
    pads = resolve_pads(a.get("pads") or [0] * (2 * nd), xs[2:], ws[2:], strides, dil)
    return [Launch(f"conv{nd}d_v1", math.prod(ys), (
        Act(x), Param(node.params["w"], "int8"), Param(node.params["bias"], "int32"),
        Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"),
        Param(node.params["w_zero_point"], "int32"), Act(y),
        xs[0], xs[1], *xs[2:], ws[0], *ys[2:], *ws[2:], *strides, *pads[:nd], *dil,
        int(a.get("group", 1)), int(a["x_zero_point"]), int(a["y_zero_point"]), *_qrange(a)))]


def _lower_dense(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs, ys = S[x], S[y]
    return [Launch("dense_v1", math.prod(ys), (
        Act(x), Param(node.params["w"], "int8"), Param(node.params["bias"], "int32"),
        Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"),
        Param(node.params["w_zero_point"], "int32"), Act(y),
        math.prod(xs[:-1]), xs[-1], ys[-1], int(bool(a.get("trans_w", 0))),
        int(a["x_zero_point"]), int(a["y_zero_point"]), *_qrange(a)))]


def _lower_matmul(node, S, P):
    a, (ta, tb), (y,) = node.attrs, node.inputs, node.outputs
    sa, sb, ys = S[ta], S[tb], S[y]
    M, K, N = sa[-2], sa[-1], sb[-1]
    batch = ys[:-2]
    table = (*batch, *_broadcast_strides(sa[:-2], batch, M * K),
             *_broadcast_strides(sb[:-2], batch, K * N))
    return [Launch("matmul_v1", math.prod(ys), (
        Act(ta), Act(tb), Table(table), Act(y), math.prod(batch), len(batch), M, K, N,
        int(a["a_zero_point"]), int(a["b_zero_point"]), int(a["y_zero_point"]),
        int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _lower_requantize(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    return [Launch("requantize_v1", math.prod(S[y]), (
        Act(x), Act(y), math.prod(S[y]), int(a["x_zero_point"]), int(a["y_zero_point"]),
        int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _channels(shape):
    return shape[1], math.prod(shape[2:])  # C, elements per channel and sample


def _lower_batchnorm(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    return [Launch("batchnorm_v1", math.prod(S[y]), (
        Act(x), Param(node.params["scale"], "int8"), Param(node.params["bias"], "int32"),
        Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"), Act(y),
        math.prod(S[y]), *_channels(S[x]), int(a["x_zero_point"]), int(a["y_zero_point"]),
        *_qrange(a)))]


def _lower_relu(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    return [Launch("relu_v1", math.prod(S[y]), (
        Act(x), Act(y), math.prod(S[y]), int(node.attrs["x_zero_point"])))]


def _lower_clip(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    return [Launch("clip_v1", math.prod(S[y]), (
        Act(x), Act(y), math.prod(S[y]), *_qrange(node.attrs)))]


def _lower_prelu(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    return [Launch("prelu_v1", math.prod(S[y]), (
        Act(x), Param(node.params["slope"], "int8"), Param(node.params["multiplier"], "int64"),
        Param(node.params["shift"], "int64"), Act(y), math.prod(S[y]), *_channels(S[x]),
        int(a["x_zero_point"]), int(a["y_zero_point"]), int(a["pos_multiplier"]),
        int(a["pos_shift"]), *_qrange(a)))]


def _binary(node, S):
    (ta, tb), (y,) = node.inputs, node.outputs
    ys = S[y]
    table = (*ys, *_broadcast_strides(S[ta], ys), *_broadcast_strides(S[tb], ys))
    return (Act(ta), Act(tb), Table(table), Act(y), math.prod(ys), len(ys),
            int(node.attrs["a_zero_point"]), int(node.attrs["b_zero_point"]),
            int(node.attrs["y_zero_point"]))


def _lower_add(node, S, P):
    a = node.attrs
    return [Launch("add_v1", math.prod(S[node.outputs[0]]), (
        *_binary(node, S)[:6], int(a["code_offset"]), int(a["a_multiplier"]),
        int(a["b_multiplier"]), int(a["fixed"]), int(a["shift"]), int(a["a_first"]),
        *_qrange(a)))]


def _lower_mul(node, S, P):
    a = node.attrs
    return [Launch("mul_v1", math.prod(S[node.outputs[0]]), (
        *_binary(node, S), int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _lower_lut(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    return [Launch("lut_v1", math.prod(S[y]), (
        Act(x), Param(node.params["table"], "int8"), Act(y), math.prod(S[y])))]


def _lower_softmax(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs = S[x]
    axis = int(a["axis"]) % len(xs)
    return [Launch("softmax_v1", math.prod(xs), (
        Act(x), Param(node.params["exp_table"], "int64"), Act(y), math.prod(xs), xs[axis],
        math.prod(xs[axis + 1:]), int(a["y_inv_scale"]), int(a["y_zero_point"]), *_qrange(a)))]


def _pool_geometry(node, S):
    """(N, C, D, H, W, OD, OH, OW, KD, KH, KW, strides, pad begins, pad ends, dilations):
    1-D and 2-D windows as 3-D ones with unit leading axes."""
    a, xs, ys = node.attrs, S[node.inputs[0]], S[node.outputs[0]]
    ks = [int(v) for v in a["kernel_shape"]]
    nd = len(ks)
    if nd > 3:
        raise UnsupportedOpError(f"node {node.name!r} (op {node.op}): {nd}-D pooling; the CUDA "
                                 "kernels take 1 to 3 spatial axes (use device='cpu')")
    lead = 3 - nd
    pads = [int(v) for v in a.get("pads") or [0] * (2 * nd)]

    def fill(v, unit):
        return [unit] * lead + [int(t) for t in v]

    return (xs[0], xs[1], *fill(xs[2:], 1), *fill(ys[2:], 1), *fill(ks, 1),
            *fill(a.get("strides") or [1] * nd, 1), *fill(pads[:nd], 0), *fill(pads[nd:], 0),
            *fill(a.get("dilations") or [1] * nd, 1))


def _lower_max_pool(node, S, P):
    g = _pool_geometry(node, S)
    return [Launch("max_pool_v1", math.prod(S[node.outputs[0]]), (
        Act(node.inputs[0]), Act(node.outputs[0]), *g[:17], *g[20:]))]  # no pad ends


def _lower_avg_pool(node, S, P):
    a = node.attrs
    return [Launch("avg_pool_v1", math.prod(S[node.outputs[0]]), (
        Act(node.inputs[0]), Param(node.params["multiplier"], "int64"),
        Param(node.params["shift"], "int64"), Act(node.outputs[0]), *_pool_geometry(node, S),
        int(bool(a.get("count_include_pad", 0))), int(a["x_zero_point"]),
        int(a["y_zero_point"]), *_qrange(a)))]


def _lower_global_avg_pool(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs = S[x]
    return [Launch("global_avg_pool_v1", xs[0] * xs[1], (
        Act(x), Act(y), xs[0] * xs[1], math.prod(xs[2:]), int(a["x_zero_point"]),
        int(a["y_zero_point"]), int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _lower_copy(node, S, P):
    return [Copy(node.inputs[0], node.outputs[0])]


def _lower_transpose(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    xstr = _row_major(S[x])
    perm = [int(p) for p in node.attrs["perm"]]
    table = (*S[y], *[xstr[p] for p in perm])
    return [Launch("transpose_v1", math.prod(S[y]), (
        Act(x), Table(table), Act(y), math.prod(S[y]), len(S[y])))]


def _lower_take(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    return [Launch("take_v1", math.prod(S[y]), (
        Act(x), Table((*S[y], *S[x])), Param(node.params["indices"], "int32"), Act(y),
        math.prod(S[y]), len(S[y])))]


def _lower_embedding(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    vocab, dim = P["table"].shape
    return [Launch("embedding_v1", math.prod(S[y]), (
        Act(x), Param(node.params["table"], "int8"), Act(y), math.prod(S[y]), vocab, dim))]


def _lower_constant(node, S, P):
    (y,) = node.outputs
    return [Launch("constant_v1", math.prod(S[y]), (
        Param(node.params["value"], "int8"), Act(y), math.prod(S[y]), P["value"].size))]


def _lower_lrn(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs = S[x]
    return [Launch("lrn_v1", math.prod(xs), (
        Act(x), Param(node.params["start"], "int8"), Param(node.params["step"], "int8"),
        Param(node.params["thresholds"], "int32"), Act(y), math.prod(xs), xs[1],
        math.prod(xs[2:]), P["thresholds"].shape[1], int(a["size"]), int(a["x_zero_point"]),
        *_qrange(a)))]


def _lower_layernorm(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs = S[x]
    return [Launch("layernorm_v1", math.prod(xs), (
        Act(x), Param(node.params["g"], "int32"), Param(node.params["b"], "int64"), Act(y),
        math.prod(xs), math.prod(xs[int(a["axis"]) % len(xs):]), *P["g"].shape,
        int(a["eps_term"]), int(a["shift"]), int(a["x_zero_point"]), int(a["y_zero_point"]),
        *_qrange(a)))]


def _lower_resize_linear(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    return [Launch("resize_linear_v1", math.prod(S[y]), (
        Act(x), Table((*S[y], *S[x], 0, *a["frac_bits"])),
        Param(node.params["indices"], "int32"), Param(node.params["weights"], "int32"), Act(y),
        math.prod(S[y]), len(S[y]),
        int(a["x_zero_point"]), int(a["y_zero_point"]), int(a["multiplier"]), int(a["shift"]),
        *_qrange(a)))]


def _lower_concat(node, S, P):
    a, (y,) = node.attrs, node.outputs
    ys = S[y]
    axis = int(a["axis"]) % len(ys)
    inner = math.prod(ys[axis + 1:])
    launches, offset = [], 0
    for x, z, m, k in zip(node.inputs, a["x_zero_points"], a["multipliers"], a["shifts"],
                          strict=True):
        part = S[x][axis] * inner
        launches.append(Launch("concat_v1", math.prod(S[x]), (
            Act(x), Act(y), math.prod(S[x]), part, ys[axis] * inner, offset, int(z), int(m),
            int(k), int(a["y_zero_point"]))))
        offset += part
    return launches


def _lower_pad(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    r = len(S[x])
    table = (*S[y], *S[x], *[int(v) for v in a["pads"][:r]])
    return [Launch("pad_v1", math.prod(S[y]), (
        Act(x), Table(table), Act(y), math.prod(S[y]), r,
        _PAD_MODES[a.get("mode", "constant")], int(a.get("value", 0))))]


LOWER = {
    "conv1d": _lower_conv, "conv2d": _lower_conv, "conv3d": _lower_conv,
    "dense": _lower_dense, "matmul": _lower_matmul,
    "requantize": _lower_requantize, "batchnorm": _lower_batchnorm, "relu": _lower_relu,
    "clip": _lower_clip, "prelu": _lower_prelu, "add": _lower_add, "mul": _lower_mul,
    "lut": _lower_lut, "softmax": _lower_softmax,
    "max_pool": _lower_max_pool, "avg_pool": _lower_avg_pool,
    "global_avg_pool": _lower_global_avg_pool,
    "flatten": _lower_copy, "reshape": _lower_copy, "identity": _lower_copy,
    "transpose": _lower_transpose, "concat": _lower_concat, "pad": _lower_pad,
    "take": _lower_take, "lrn": _lower_lrn, "layernorm": _lower_layernorm,
    "resize_linear": _lower_resize_linear,
    "embedding": _lower_embedding, "constant": _lower_constant,
}


def lower(node, shapes, buffers):
    """The launches of one node; ``shapes`` are concrete (batch substituted)."""
    if node.op not in LOWER:
        raise UnsupportedOpError(f"node {node.name!r}: op {node.op!r} has no CUDA kernel")
    steps = LOWER[node.op](node, shapes, {r: buffers[b] for r, b in node.params.items()})
    for s in steps:
        if isinstance(s, Launch):
            check_launch(s, node.outputs[0])
    return steps
