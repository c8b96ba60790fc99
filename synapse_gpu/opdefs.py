"""Per-op table for the core: attribute and parameter schemas, shape rule, accumulator bound.

The core validates and plans graphs from this table alone, without running a
kernel. The integer rules themselves live in reference/ (docs/SPEC.md); the
schema kinds and ranges in schema.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import DtypeError, ModelFormatError, ShapeError, UnsupportedOpError
from .reference.pool import output_size
from .reference.softmax import EXP_ONE
from .reference.layernorm import MAX_N as LN_MAX_N
from .reference.lrn import MAX_SIZE as LRN_MAX_SIZE
from .reference.resize import MAX_FRAC_BITS as RESIZE_MAX_FRAC
from .reference.take import take_shape_error
from .reference.embedding import ID_BYTES
from .schema import (ADD_FIXED, ADD_MULTIPLIER, ADD_SHIFT, AXIS, DIM, INT8, MAX_RANK, MULTIPLIER,
                     PAD, SHIFT, Int, Ints, Param, Str, attrs_error)

I8, I32, I64 = np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.int64)
INT_TYPES = (I32, I64)  # multipliers may be stored in either
MAX_CONCAT = 4096  # inputs of one concat


@dataclass(frozen=True)
class OpDef:
    name: str
    params: dict  # role -> schema.Param (dtypes, value range)
    attrs: dict  # name -> schema.Int / Ints / Str: every attribute the op accepts
    shape: Callable  # (node, in_shapes, params) -> list of out shapes
    bound: Callable | None = None  # (node, in_shapes, params) -> per-channel int bounds
    n_inputs: tuple = (1, 1)  # (min, max)
    reduction: Callable | None = None  # (node, in_shapes, params) -> terms per output
    compute: bool = True  # counts as a layer for the depth limit
    # which params are per output channel, to check their length
    per_channel: tuple = field(default=())


def fail(node, msg, exc=ShapeError):
    raise exc(f"node {node.name!r} (op {node.op}): {msg}")


def _same(node, s, p):
    return [s[0]]


def _spatial(node, x, kernel, ceil_mode=0):
    nd = len(kernel)
    a = node.attrs
    strides = a.get("strides", [1] * nd)
    dil = a.get("dilations", [1] * nd)
    pads = a.get("pads", [0] * (2 * nd))
    if len(x) != nd + 2 or len(strides) != nd or len(dil) != nd or len(pads) != 2 * nd:
        fail(node, f"input rank {len(x)}, kernel {list(kernel)}, strides {strides}, "
                   f"dilations {dil}, pads {pads} do not fit together")
    if min(strides) < 1 or min(dil) < 1 or min(pads) < 0 or min(kernel) < 1:
        fail(node, "strides, dilations, kernel must be >= 1 and pads >= 0")
    out = [output_size(x[2 + i], kernel[i], strides[i], pads[i], pads[nd + i], dil[i], ceil_mode)
           for i in range(nd)]
    if min(out) < 1:
        fail(node, f"window {list(kernel)} does not fit the input {list(x[2:])} with pads {pads}")
    return out


def _conv_shape(nd):
    def shape(node, s, p):
        x, w = s[0], p["w"].shape
        g = int(node.attrs.get("group", 1))
        if len(x) != nd + 2 or len(w) != nd + 2:
            fail(node, f"expects a rank-{nd + 2} input and weight, got {list(x)} and {list(w)}")
        if g < 1 or x[1] != w[1] * g or w[0] % g:
            fail(node, f"input channels {x[1]} != weight {w[1]} x group {g} "
                       f"or output channels {w[0]} not divisible by the group")
        return [(x[0], w[0], *_spatial(node, x, w[2:]))]
    return shape


def _x_range(node, zp_attr):
    z = int(node.attrs.get(zp_attr, 0))
    return max(abs(-128 - z), abs(127 - z))


def _weight_bound(node, w, p):
    """Per output row of w (M, K): sum_k |w - w_zp| * max|x - x_zp| + |bias|. int16 holds
    |w - w_zp| <= 255 (both int8, schema.py), so the temporaries are 2 bytes per weight."""
    d = np.abs(w.astype(np.int16) - p["w_zero_point"].astype(np.int16).reshape(-1, 1))
    return (d.sum(axis=1, dtype=np.int64) * _x_range(node, "x_zero_point")
            + np.abs(p["bias"].astype(np.int64)))


def _conv_bound(node, s, p):
    return _weight_bound(node, p["w"].reshape(p["w"].shape[0], -1), p)


def _conv_reduction(node, s, p):
    return int(np.prod(p["w"].shape[1:]))


def _dense_shape(node, s, p):
    x, w = s[0], p["w"].shape
    K, M = (w[1], w[0]) if node.attrs.get("trans_w") else (w[0], w[1])
    if len(x) < 2 or x[-1] != K:
        fail(node, f"input {list(x)} does not match weight {list(w)} (trans_w="
                   f"{node.attrs.get('trans_w', 0)})")
    return [(*x[:-1], M)]


def _dense_bound(node, s, p):
    return _weight_bound(node, p["w"] if node.attrs.get("trans_w") else p["w"].T, p)


def _broadcast(node, shapes):
    # the batch (-1) broadcasts like a size of its own that no fixed size equals
    sentinel = 2_147_483_629
    try:
        out = np.broadcast_shapes(*[tuple(sentinel if d == -1 else d for d in t) for t in shapes])
    except ValueError:
        fail(node, f"shapes {[list(t) for t in shapes]} do not broadcast")
    return tuple(-1 if d == sentinel else d for d in out)


def _matmul_shape(node, s, p):
    a, b = s
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        fail(node, f"cannot multiply {list(a)} by {list(b)}")
    return [(*_broadcast(node, [a[:-2], b[:-2]]), a[-2], b[-1])]


def _matmul_bound(node, s, p):
    K = s[0][-1]
    return np.array([K * _x_range(node, "a_zero_point") * _x_range(node, "b_zero_point")])


def _channel_params(*roles):
    def shape(node, s, p):
        x = s[0]
        if len(x) < 2:
            fail(node, f"needs a channel axis, got shape {list(x)}")
        for r in roles:
            if p[r].shape != (x[1],):
                fail(node, f"param {r} has shape {list(p[r].shape)}, expected [{x[1]}] (channels)")
        return [x]
    return shape


def _batchnorm_bound(node, s, p):
    return (np.abs(p["scale"].astype(np.int64)) * _x_range(node, "x_zero_point")
            + np.abs(p["bias"].astype(np.int64)))


def _prelu_bound(node, s, p):
    return np.abs(p["slope"].astype(np.int64)) * _x_range(node, "x_zero_point")


def _lut_shape(node, s, p):
    if p["table"].shape != (256,):
        fail(node, f"table has shape {list(p['table'].shape)}, expected [256]")
    return [s[0]]


def _softmax_shape(node, s, p):
    axis, r = int(node.attrs["axis"]), len(s[0])
    if not -r <= axis < r or axis % r == 0 or p["exp_table"].shape != (256,):
        fail(node, f"axis {axis} must be a non-batch axis of {list(s[0])} and the table 256 long")
    if s[0][axis] > 4096:  # keeps the integer sum of the exp table inside int32
        fail(node, f"softmax over {s[0][axis]} > 4096 elements")
    if p["exp_table"][0] < 1:  # the maximum's own term: the sum is never 0
        fail(node, f"exp_table[0] = {p['exp_table'][0]}, must be >= 1", ModelFormatError)
    return [s[0]]


def _take_shape(node, s, p):
    err = take_shape_error(s[0], p["indices"], node.attrs["sizes"])
    if err:
        fail(node, err)
    return [(s[0][0], *node.attrs["sizes"])]


def _embedding_shape(node, s, p):
    x, t = s[0], p["table"].shape
    if len(x) < 2 or x[-1] != ID_BYTES or len(t) != 2 or min(t) < 1:
        fail(node, f"expects packed token ids (N, ..., {ID_BYTES}) and a (vocab, dim) table, "
                   f"got {list(x)} and {list(t)}")
    return [(*x[:-1], t[1])]


def _constant_shape(node, s, p):
    v = p["value"].shape
    if len(v) >= MAX_RANK or 0 in v:
        fail(node, f"value of shape {list(v)}: 1 to {MAX_RANK - 1} non-empty axes per sample")
    return [(s[0][0], *v)]


def _lrn_shape(node, s, p):
    t = p["thresholds"]
    if len(s[0]) < 2 or p["start"].shape != (256,) or p["step"].shape != (256,) or \
            t.ndim != 2 or t.shape[0] != 256 or t.shape[1] < 1:
        fail(node, f"input {list(s[0])} needs a channel axis; start, step (256) and thresholds "
                   f"(256, T >= 1), got {list(t.shape)}")
    if (np.diff(t.astype(np.int64), axis=1) < 0).any():  # the backends binary-search rows
        fail(node, "thresholds rows must be ascending", ModelFormatError)
    return [s[0]]


def _layernorm_shape(node, s, p):
    x, axis = s[0], int(node.attrs["axis"])
    if not 1 <= axis % len(x) < len(x):
        fail(node, f"axis {axis} must be a non-batch axis of {list(x)}")
    n, rows = math.prod(x[axis % len(x):]), math.prod(x[1:axis % len(x)])
    g = p["g"].shape
    if n > LN_MAX_N or len(g) != 2 or g != p["b"].shape or g[1] not in (1, n) or rows % g[0]:
        fail(node, f"normalizes {n} elements (at most {LN_MAX_N}) in {rows} rows per sample; g "
                   f"and b need one shape (K, {n} or 1), K dividing {rows}, got "
                   f"{list(g)}, {list(p['b'].shape)}")
    return [x]


def _resize_linear_shape(node, s, p):
    x, sizes = s[0], [int(v) for v in node.attrs["sizes"]]
    frac = [int(v) for v in node.attrs["frac_bits"]]
    k = len(sizes)
    if not 2 <= len(x) <= 4 or k != len(x) - 1 or min(sizes) < 1 or len(frac) != k or \
            sum(frac) > RESIZE_MAX_FRAC:
        fail(node, f"sizes {sizes} / frac_bits {frac} for input {list(x)}: one per axis after "
                   f"the batch, rank 2..4, at most {RESIZE_MAX_FRAC} fraction bits in all")
    if p["indices"].shape != (2 * sum(sizes),) or p["weights"].shape != (sum(sizes),):
        fail(node, f"indices {list(p['indices'].shape)} / weights {list(p['weights'].shape)}: "
                   f"expected [{2 * sum(sizes)}] / [{sum(sizes)}]")
    start = wstart = 0
    for d, size, f in zip(x[1:], sizes, frac):
        part, w = p["indices"][start:start + 2 * size], p["weights"][wstart:wstart + size]
        if part.min() < 0 or part.max() >= d or w.max() > 1 << f:
            fail(node, f"indices outside an axis of size {d} or weights above 2^{f}")
        start, wstart = start + 2 * size, wstart + size
    if not 1 <= int(node.attrs["shift"]) + sum(frac) <= 62:
        fail(node, f"shift {node.attrs['shift']} + {sum(frac)} outside [1, 62]")
    return [(x[0], *sizes)]


def _binary_shape(node, s, p):
    return [_broadcast(node, s)]


def _pool_kernel(node, s, p):
    return list(node.attrs["kernel_shape"])


def _max_pool_shape(node, s, p):
    x = s[0]
    return [(x[0], x[1], *_spatial(node, x, _pool_kernel(node, s, p), node.attrs.get("ceil_mode", 0)))]


def _avg_pool_shape(node, s, p):
    out = _max_pool_shape(node, s, p)
    v = int(np.prod(_pool_kernel(node, s, p)))
    for r in ("multiplier", "shift"):
        if p[r].shape != (v + 1,):
            fail(node, f"param {r} has shape {list(p[r].shape)}, expected [{v + 1}] (one per window count)")
    return out


def _avg_pool_bound(node, s, p):
    return np.array([int(np.prod(_pool_kernel(node, s, p))) * _x_range(node, "x_zero_point")])


def _gap_shape(node, s, p):
    x = s[0]
    if len(x) < 3:
        fail(node, f"needs spatial axes, got shape {list(x)}")
    return [(x[0], x[1], *[1] * (len(x) - 2))]


def _gap_bound(node, s, p):
    return np.array([math.prod(s[0][2:]) * _x_range(node, "x_zero_point")])


def _flatten_shape(node, s, p):
    x, axis = s[0], int(node.attrs.get("axis", 1))
    if axis != 1:
        fail(node, f"flatten axis {axis}: only axis 1 keeps the batch axis apart", UnsupportedOpError)
    return [(x[0], math.prod(x[1:]))]


def _reshape_shape(node, s, p):
    x, shape = s[0], [int(v) for v in node.attrs["shape"]]
    if not shape or shape[0] != x[0] or min(shape[1:], default=1) < 1:
        fail(node, f"target shape {shape} must keep the batch axis ({x[0]}) and be explicit")
    if math.prod(shape[1:]) != math.prod(x[1:]):
        fail(node, f"cannot reshape {list(x)} to {shape}")
    return [tuple(shape)]


def _transpose_shape(node, s, p):
    x, perm = s[0], [int(v) for v in node.attrs["perm"]]
    if sorted(perm) != list(range(len(x))) or perm[0] != 0:
        fail(node, f"perm {perm} must permute {len(x)} axes and keep the batch axis first")
    return [tuple(x[i] for i in perm)]


def _concat_shape(node, s, p):
    axis = int(node.attrs["axis"])
    r = len(s[0])
    axis = axis % r if -r <= axis < r else -1
    n = len(s)
    if axis < 1 or any(len(t) != r for t in s) or any(
            t[i] != s[0][i] for t in s for i in range(r) if i != axis):
        fail(node, f"cannot concatenate {[list(t) for t in s]} on axis {node.attrs['axis']}")
    for key in ("x_zero_points", "multipliers", "shifts"):
        if len(node.attrs[key]) != n:
            fail(node, f"attr {key} needs {n} entries, has {len(node.attrs[key])}")
    return [tuple(sum(t[axis] for t in s) if i == axis else s[0][i] for i in range(r))]


def _pad_shape(node, s, p):
    x, pads = s[0], [int(v) for v in node.attrs["pads"]]
    r = len(x)
    if len(pads) != 2 * r or pads[0] or pads[r] or min(pads) < 0:
        fail(node, f"pads {pads} must have {2 * r} non-negative entries, none on the batch axis")
    if node.attrs.get("mode", "constant") not in ("constant", "edge", "reflect"):
        fail(node, f"pad mode {node.attrs.get('mode')!r}", UnsupportedOpError)
    return [tuple(x[i] + pads[i] + pads[r + i] if i else x[0] for i in range(r))]


Q = {"qmin": Int(*INT8, required=False), "qmax": Int(*INT8, required=False)}  # output clamp
ZP = Int(*INT8)
REQ = {"multiplier": Int(*MULTIPLIER), "shift": Int(*SHIFT)}  # one per-tensor requantization
CHANNEL_REQ = {"multiplier": Param(INT_TYPES, *MULTIPLIER), "shift": Param(INT_TYPES, *SHIFT)}
WINDOW = {"kernel_shape": Ints(*DIM), "strides": Ints(*DIM, required=False),
          "pads": Ints(*PAD, required=False, max_len=2 * MAX_RANK),
          "dilations": Ints(*DIM, required=False), "ceil_mode": Int(0, 1, required=False)}
_CONV_PARAMS = {"w": Param((I8,)), "bias": Param((I32,)), **CHANNEL_REQ,
                "w_zero_point": Param(INT_TYPES, *INT8)}


def _conv_def(nd):
    return OpDef(f"conv{nd}d", _CONV_PARAMS, dict(
        x_zero_point=ZP, y_zero_point=ZP, strides=Ints(*DIM), pads=Ints(*PAD, max_len=2 * MAX_RANK),
        dilations=Ints(*DIM), group=Int(*DIM), **Q), _conv_shape(nd), _conv_bound,
        reduction=_conv_reduction, per_channel=("bias", "multiplier", "shift", "w_zero_point"))


def _xy(*names):
    return {n: ZP for n in names}


OPS = {d.name: d for d in [
    _conv_def(1), _conv_def(2), _conv_def(3),
    OpDef("dense", _CONV_PARAMS, dict(**_xy("x_zero_point", "y_zero_point"), trans_w=Int(0, 1), **Q),
          _dense_shape, _dense_bound, reduction=lambda n, s, p: s[0][-1],
          per_channel=("bias", "multiplier", "shift", "w_zero_point")),
    OpDef("matmul", {}, dict(**_xy("a_zero_point", "b_zero_point", "y_zero_point"), **REQ, **Q),
          _matmul_shape, _matmul_bound, n_inputs=(2, 2), reduction=lambda n, s, p: s[0][-1]),
    OpDef("requantize", {}, dict(**_xy("x_zero_point", "y_zero_point"), **REQ, **Q), _same,
          lambda n, s, p: np.array([_x_range(n, "x_zero_point")])),
    OpDef("batchnorm", {"scale": Param((I8,)), "bias": Param((I32,)), **CHANNEL_REQ},
          dict(**_xy("x_zero_point", "y_zero_point"), **Q),
          _channel_params("scale", "bias", "multiplier", "shift"), _batchnorm_bound),
    OpDef("relu", {}, _xy("x_zero_point"), _same),
    OpDef("clip", {}, {"qmin": Int(*INT8), "qmax": Int(*INT8)}, _same),
    OpDef("prelu", {"slope": Param((I8,)), **CHANNEL_REQ},
          dict(**_xy("x_zero_point", "y_zero_point"), pos_multiplier=Int(*MULTIPLIER),
               pos_shift=Int(*SHIFT), **Q),
          _channel_params("slope", "multiplier", "shift"), _prelu_bound),
    OpDef("lut", {"table": Param((I8,))}, {"fn": Str(required=False)}, _lut_shape),
    OpDef("softmax", {"exp_table": Param(INT_TYPES, 0, EXP_ONE)},
          dict(axis=Int(*AXIS), y_inv_scale=Int(0, 1 << 40), y_zero_point=ZP, **Q), _softmax_shape),
    OpDef("add", {}, dict(**_xy("a_zero_point", "b_zero_point", "y_zero_point"),
                          a_multiplier=Int(*ADD_MULTIPLIER), b_multiplier=Int(*ADD_MULTIPLIER),
                          shift=Int(*ADD_SHIFT), code_offset=Int(0, 128), fixed=Int(*ADD_FIXED),
                          a_first=Int(0, 1), **Q),
          _binary_shape, n_inputs=(2, 2)),
    OpDef("mul", {}, dict(**_xy("a_zero_point", "b_zero_point", "y_zero_point"), **REQ, **Q),
          _binary_shape, lambda n, s, p: np.array(
              [_x_range(n, "a_zero_point") * _x_range(n, "b_zero_point")]), n_inputs=(2, 2)),
    OpDef("max_pool", {}, WINDOW, _max_pool_shape),
    OpDef("avg_pool", CHANNEL_REQ, dict(**WINDOW, **_xy("x_zero_point", "y_zero_point"),
                                        count_include_pad=Int(0, 1, required=False), **Q),
          _avg_pool_shape, _avg_pool_bound),
    OpDef("global_avg_pool", {}, dict(**_xy("x_zero_point", "y_zero_point"), **REQ, **Q),
          _gap_shape, _gap_bound),
    OpDef("flatten", {}, {"axis": Int(*AXIS, required=False)}, _flatten_shape, compute=False),
    OpDef("reshape", {}, {"shape": Ints(-1, (1 << 31) - 1)}, _reshape_shape, compute=False),
    OpDef("transpose", {}, {"perm": Ints(0, MAX_RANK - 1)}, _transpose_shape, compute=False),
    OpDef("identity", {}, {}, _same, compute=False),
    OpDef("lrn", {"start": Param((I8,)), "step": Param((I8,), -1, 1),
                  "thresholds": Param((I32,), 0, (1 << 31) - 1)},
          dict(size=Int(1, LRN_MAX_SIZE), x_zero_point=ZP, **Q), _lrn_shape),
    OpDef("layernorm", {"g": Param((I32,), -(1 << 24), 1 << 24),
                        "b": Param((I64,), -(1 << 47), 1 << 47)},
          dict(axis=Int(*AXIS), eps_term=Int(0, (1 << 50) - 1), shift=Int(0, 22),
               **_xy("x_zero_point", "y_zero_point"), **Q), _layernorm_shape),
    OpDef("resize_linear", {"indices": Param((I32,)),
                            "weights": Param((I32,), 0, 1 << RESIZE_MAX_FRAC)},
          dict(sizes=Ints(1, 1 << 28, max_len=3), frac_bits=Ints(0, RESIZE_MAX_FRAC, max_len=3),
               **_xy("x_zero_point", "y_zero_point"), **REQ, **Q), _resize_linear_shape),
    OpDef("take", {"indices": Param((I32,))}, {"sizes": Ints(1, 1 << 28, max_len=MAX_RANK)},
          _take_shape, compute=False),
    OpDef("embedding", {"table": Param((I8,))}, {}, _embedding_shape, compute=False),
    OpDef("constant", {"value": Param((I8,))}, {}, _constant_shape, compute=False),
    OpDef("concat", {}, dict(axis=Int(*AXIS), x_zero_points=Ints(*INT8, max_len=MAX_CONCAT),
                             multipliers=Ints(*MULTIPLIER, max_len=MAX_CONCAT),
                             shifts=Ints(*SHIFT, max_len=MAX_CONCAT), y_zero_point=ZP),
          _concat_shape, n_inputs=(1, MAX_CONCAT), compute=False),
    OpDef("pad", {}, dict(pads=Ints(*PAD, max_len=2 * MAX_RANK),
                          mode=Str(("constant", "edge", "reflect"), required=False),
                          value=Int(*INT8, required=False)), _pad_shape, compute=False),
]}


def opdef(node):
    if not isinstance(node.op, str) or node.op not in OPS:
        raise UnsupportedOpError(
            f"node {node.name!r}: op {node.op!r} is not a Synapse op (known: {', '.join(sorted(OPS))})")
    return OPS[node.op]


def check_schema(node, buffers):
    """Inputs count, param roles, buffer presence, dtypes and ranges, attrs (schema.py)."""
    d = opdef(node)
    lo, hi = d.n_inputs
    if len(node.inputs) < lo or (hi is not None and len(node.inputs) > hi) or len(node.outputs) != 1:
        fail(node, f"has {len(node.inputs)} inputs and {len(node.outputs)} outputs; expects "
                   f"{lo}{'' if hi == lo else '..' + str(hi)} inputs and 1 output", ModelFormatError)
    if set(node.params) != set(d.params):
        fail(node, f"params {sorted(node.params)} != expected {sorted(d.params)}", ModelFormatError)
    for role, spec in d.params.items():
        bid = node.params[role]
        if bid not in buffers:
            fail(node, f"param {role} refers to missing buffer {bid!r}", ModelFormatError)
        err = spec.error(buffers[bid])
        if err:
            fail(node, f"param {role} {err}", DtypeError if "dtype" in err else ModelFormatError)
    err = attrs_error(node.attrs, d.attrs)
    if err:
        fail(node, err, UnsupportedOpError if err.startswith("unknown") else ModelFormatError)
    if d.per_channel:
        w = buffers[node.params["w"]].shape
        if len(w) < 2 or (node.op == "dense" and len(w) != 2):  # conv ranks: the shape rule
            fail(node, f"weight has shape {list(w)}: wrong rank")
        m = w[0 if node.op != "dense" or node.attrs.get("trans_w") else 1]
        for r in d.per_channel:
            if buffers[node.params[r]].shape != (m,):
                fail(node, f"param {r} has shape {list(buffers[node.params[r]].shape)}, "
                           f"expected [{m}] (one per output channel)")
    return d
