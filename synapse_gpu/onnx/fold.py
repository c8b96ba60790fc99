"""Constant folding of the small integer computations exported models carry.

Exporters compute reshape targets at run time (Shape -> Gather -> Unsqueeze ->
Concat -> Reshape). Synapse graphs have static per-sample shapes, so these are
evaluated once at import, on small arrays. The batch size stays a symbol
(values.BATCH_SYM): it may be copied, gathered, sliced and concatenated, but
arithmetic on it would make the integer graph depend on the batch size and is
rejected. Every output size is checked before numpy allocates it.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import helper

from ..errors import ModelFormatError, OnnxImportError, UnsupportedOpError
from .checks import _NP_TYPES, MAX_ELEMS, label, to_array, type_name
from .values import BATCH_SYM

FOLDABLE = {"Constant", "Identity", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice",
            "Reshape", "Flatten", "Transpose", "Add", "Sub", "Mul", "Div", "ConstantOfShape"}


_DATA_INPUTS = {"Gather": 2, "Reshape": 2, "Slice": 3, "Add": 2, "Sub": 2, "Mul": 2, "Div": 2}


def _fail(node, msg, exc=OnnxImportError):
    raise exc(f"node {label(node)!r} (op {node.op_type}): {msg}")


def _no_batch(node, *arrays):
    for a in arrays:
        if a.dtype == np.int64 and (a == BATCH_SYM).any():
            _fail(node, "computes with the batch size; the integer graph would depend on it",
                  UnsupportedOpError)


def _size_ok(node, shape):
    n = math.prod(int(d) for d in shape)
    if n > MAX_ELEMS or min(shape, default=0) < 0:
        _fail(node, f"folded result of shape {list(shape)} exceeds the limit of {MAX_ELEMS} "
                    "elements", ModelFormatError)


def _axes(node, a, ins, rank, idx=1):
    """Axes from the attribute (older opsets) or the optional input `idx` (opset 13+)."""
    if len(ins) > idx and ins[idx] is not None:
        axes = [int(v) for v in ins[idx].reshape(-1)]
    else:
        axes = a.get("axes")
    if axes is None:
        return None
    out = [v + rank if v < 0 else v for v in axes]
    if any(not 0 <= v < rank for v in out) or len(set(out)) != len(out):
        _fail(node, f"axes {axes} do not fit rank {rank}", ModelFormatError)
    return out


def reshape_target(node, in_shape, target, allowzero=0):
    """Resolve an ONNX Reshape target (0 copies, -1 infers) against a concrete shape."""
    out, infer = [], None
    for i, d in enumerate(int(v) for v in target):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                _fail(node, f"target {list(target)}: 0 at axis {i} has no input axis to copy",
                      ModelFormatError)
            d = in_shape[i]
        elif d == -1:
            if infer is not None:
                _fail(node, f"target {list(target)} has two -1 entries", ModelFormatError)
            infer = i
        elif d < 0:
            _fail(node, f"target {list(target)} has a negative size", ModelFormatError)
        out.append(d)
    total = math.prod(in_shape)
    if infer is not None:
        rest = math.prod(d for i, d in enumerate(out) if i != infer)
        if rest == 0 or total % rest:
            _fail(node, f"cannot reshape {list(in_shape)} to {list(target)}", ModelFormatError)
        out[infer] = total // rest
    if math.prod(out) != total:
        _fail(node, f"cannot reshape {list(in_shape)} to {list(target)}", ModelFormatError)
    return out


def constant_value(node, a):
    """The tensor of a Constant node (value, value_float(s), value_int(s))."""
    if "value" in a:
        return to_array(a["value"], f"node {label(node)!r} constant")
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            v = np.asarray(a[key], dtype=dtype)
            _size_ok(node, v.shape)
            return v
    _fail(node, f"constant kind {sorted(a)} is not supported (dense numeric values only)",
          UnsupportedOpError)


def _int_div(node, x, y):
    if (y == 0).any():
        _fail(node, "integer division by zero", ModelFormatError)
    q = np.abs(x) // np.abs(y)  # ONNX integer Div truncates toward zero
    return np.where((x < 0) ^ (y < 0), -q, q).astype(x.dtype)


def fold(node, ins):
    """Evaluate `node` on constant inputs (numpy arrays or None); returns its outputs."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    op = node.op_type
    need = 0 if op == "Constant" else _DATA_INPUTS.get(op, 1)
    if len(ins) < need or any(v is None for v in ins[:need]):  # e.g. an input named ''
        _fail(node, f"needs {need} data inputs, has {[v is not None for v in ins]}", ModelFormatError)
    x = ins[0] if ins else None
    if op == "Constant":
        return [constant_value(node, a)]
    if op == "Identity":
        return [x]
    if op == "Cast":
        to = int(a["to"])
        if to not in _NP_TYPES:
            _fail(node, f"cast to {type_name(to)} is not supported", UnsupportedOpError)
        if _NP_TYPES[to] != np.int64:
            _no_batch(node, x)
        return [x.astype(_NP_TYPES[to])]
    if op == "Gather":
        axis = int(a.get("axis", 0))
        axis = axis + x.ndim if axis < 0 else axis
        idx = ins[1].astype(np.int64)
        if not 0 <= axis < x.ndim:
            _fail(node, f"axis {a.get('axis')} out of range for rank {x.ndim}", ModelFormatError)
        n = x.shape[axis]
        if ((idx < -n) | (idx >= n)).any():
            _fail(node, f"indices out of range for an axis of {n}", ModelFormatError)
        _size_ok(node, x.shape[:axis] + idx.shape + x.shape[axis + 1:])
        return [np.take(x, np.where(idx < 0, idx + n, idx), axis=axis)]
    if op == "Unsqueeze":
        raw = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("axes")
        if raw is None:
            _fail(node, "has no axes", ModelFormatError)
        axes = _axes(node, a, ins, x.ndim + np.asarray(raw).size)
        shape = list(x.shape)
        for ax in sorted(axes):
            shape.insert(ax, 1)
        return [x.reshape(shape)]
    if op == "Squeeze":
        axes = _axes(node, a, ins, x.ndim)
        axes = [i for i, d in enumerate(x.shape) if d == 1] if axes is None else axes
        if any(x.shape[i] != 1 for i in axes):
            _fail(node, f"cannot squeeze axes {axes} of shape {list(x.shape)}", ModelFormatError)
        return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes])]
    if op == "Concat":
        parts = [v for v in ins if v is not None]
        axis = int(a["axis"])
        try:
            return [np.concatenate(parts, axis=axis)]
        except ValueError as e:
            _fail(node, f"cannot concatenate: {e}", ModelFormatError)
    if op == "Slice":  # opset 10+ form (older models are converted first)
        starts, ends = ins[1].tolist(), ins[2].tolist()
        axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else None
        steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else None
        _no_batch(node, np.asarray(starts, np.int64), np.asarray(ends, np.int64))
        axes = list(range(len(starts))) if axes is None else [
            v + x.ndim if v < 0 else v for v in axes]
        steps = steps or [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for ax, s, e, st in zip(axes, starts, ends, steps):
            if not 0 <= ax < x.ndim or st == 0:
                _fail(node, f"invalid slice on axis {ax} with step {st}", ModelFormatError)
            sl[ax] = slice(int(s), int(e), int(st))
        return [x[tuple(sl)]]
    if op == "Reshape":
        _no_batch(node, x)
        return [x.reshape(reshape_target(node, x.shape, ins[1].reshape(-1), a.get("allowzero", 0)))]
    if op == "Flatten":
        axis = int(a.get("axis", 1))
        axis = axis + x.ndim if axis < 0 else axis
        return [x.reshape(math.prod(x.shape[:axis]), -1)]
    if op == "Transpose":
        return [np.transpose(x, a.get("perm"))]
    if op in ("Add", "Sub", "Mul", "Div"):
        y = ins[1]
        _no_batch(node, x, y)
        try:
            _size_ok(node, np.broadcast_shapes(x.shape, y.shape))
        except ValueError:
            _fail(node, f"shapes {list(x.shape)} and {list(y.shape)} do not broadcast",
                  ModelFormatError)
        if op == "Div" and np.issubdtype(x.dtype, np.integer):
            return [_int_div(node, x, y)]
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return [f(x, y).astype(x.dtype)]
    if op == "ConstantOfShape":
        shape = x.reshape(-1).astype(np.int64)
        _no_batch(node, shape)
        _size_ok(node, shape.tolist())
        v = to_array(a["value"], f"node {label(node)!r} value") if "value" in a else \
            np.zeros(1, np.float32)
        return [np.full(shape.tolist(), v.reshape(-1)[0], dtype=v.dtype)]
    raise AssertionError(op)  # fold is only called for ops in FOLDABLE
