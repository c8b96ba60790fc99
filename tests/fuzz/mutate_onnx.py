"""Structured mutations of ONNX models: attributes, initializers, wiring, shapes, opsets,
names (including invalid UTF-8), and a few byte-level ones."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .mutate_syn import INTS, SCALES

OP_TYPES = ["Conv", "QLinearConv", "MaxPool", "AveragePool", "Relu", "Flatten", "Reshape", "Gemm",
            "Add", "Mul", "Concat", "Transpose", "Pad", "Softmax", "Sigmoid", "PRelu", "Identity",
            "QuantizeLinear", "DequantizeLinear", "GlobalAveragePool", "Clip", "Bogus"]
ELEM = [TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64,
        TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.STRING, TensorProto.BOOL]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))] if len(seq) else None


def m_attr(m, rng):
    n = _pick(rng, m.graph.node)
    if n.attribute and rng.random() < 0.8:
        a = _pick(rng, n.attribute)
        if rng.random() < 0.15:
            n.attribute.remove(a)
            return
        if a.type == onnx.AttributeProto.INTS:
            v = list(a.ints) or [1]
            v[int(rng.integers(len(v)))] = int(_pick(rng, INTS[:30]))
            if rng.random() < 0.3:
                v = v[:-1] if rng.random() < 0.5 else v + v
            del a.ints[:]
            a.ints.extend(v)
        elif a.type == onnx.AttributeProto.INT:
            a.i = int(_pick(rng, INTS[:30]))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = float(_pick(rng, SCALES + [float("nan"), float("inf")]))
        elif a.type == onnx.AttributeProto.STRING:
            a.s = _pick(rng, [b"", b"SAME_UPPER", b"VALID", b"reflect", b"x\xff"])
    else:
        name = _pick(rng, ["pads", "strides", "dilations", "group", "axis", "kernel_shape",
                           "auto_pad", "bogus", "ceil_mode", "perm", "alpha", "transA"])
        val = _pick(rng, [int(_pick(rng, INTS[:20])), [int(_pick(rng, INTS[:12]))] * int(
            rng.integers(0, 6)), 0.5, "SAME_LOWER"])
        n.attribute.append(helper.make_attribute(name, val))


def m_init(m, rng):
    if not m.graph.initializer:
        return
    t = _pick(rng, m.graph.initializer)
    a = numpy_helper.to_array(t).copy()
    r = rng.integers(6)
    if r == 0 and a.dtype.kind == "f":
        a = np.full(a.shape, _pick(rng, SCALES + [float("nan"), float("inf")]), a.dtype)
    elif r == 1 and a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        a = np.full(a.shape, _pick(rng, [info.min, info.max, 0, 1]), a.dtype)
    elif r == 2:
        a = a.reshape(-1)[: int(rng.integers(0, a.size + 1))]
    elif r == 3:
        a = a.astype(_pick(rng, [np.int8, np.uint8, np.int32, np.int64, np.float32, np.float64]))
    elif r == 4 and a.ndim:
        a = np.concatenate([a, a], axis=int(rng.integers(a.ndim)))
    else:
        new = numpy_helper.from_array(a, t.name)
        new.raw_data = new.raw_data[: int(rng.integers(len(new.raw_data) + 1))]
        t.CopyFrom(new)
        return
    t.CopyFrom(numpy_helper.from_array(np.asarray(a), t.name))


def _names(m):
    out = [i.name for i in m.graph.input] + [t.name for t in m.graph.initializer]
    for n in m.graph.node:
        out += list(n.output)
    return out


def m_wiring(m, rng):
    n = _pick(rng, m.graph.node)
    r = rng.integers(6)
    if r == 0 and n.input:
        n.input[int(rng.integers(len(n.input)))] = _pick(rng, _names(m) + ["", "ghost"])
    elif r == 1:
        n.op_type = _pick(rng, OP_TYPES)
    elif r == 2 and n.input:
        del n.input[int(rng.integers(len(n.input)))]
    elif r == 3:
        n.input.append(_pick(rng, _names(m) + [""]))
    elif r == 4 and n.output:
        n.output[0] = _pick(rng, _names(m))
    else:
        nodes = list(m.graph.node)
        i, j = int(rng.integers(len(nodes))), int(rng.integers(len(nodes)))
        nodes[i], nodes[j] = nodes[j], nodes[i]
        del m.graph.node[:]
        m.graph.node.extend(nodes)


def m_io(m, rng):
    vi = _pick(rng, list(m.graph.input) + list(m.graph.output))
    tt = vi.type.tensor_type
    r = rng.integers(4)
    if r == 0:
        tt.elem_type = _pick(rng, ELEM)
    elif r == 1 and tt.shape.dim:
        d = _pick(rng, tt.shape.dim)
        if rng.random() < 0.3:
            d.dim_param = _pick(rng, ["N", "M", ""])
        else:
            d.dim_value = int(_pick(rng, [0, 1, 2, 3, 1 << 20, 10 ** 9, 4097, 100000]))
    elif r == 2:
        tt.shape.dim.add().dim_value = int(_pick(rng, [1, 2, 3]))
    elif tt.shape.dim:
        del tt.shape.dim[-1]


def m_opset(m, rng):
    m.opset_imports[0].version = int(_pick(rng, [1, 6, 7, 10, 11, 12, 13, 17, 19, 21, 99]))
    if rng.random() < 0.2:
        m.opset_imports[0].domain = _pick(rng, ["", "com.microsoft", "ai.onnx", "x"])


MUTATORS = [m_attr] * 4 + [m_init] * 3 + [m_wiring] * 3 + [m_io] * 2 + [m_opset]


def _bad_utf8(data, rng, m):
    """Replace the first byte of one node name or tensor name with 0xff (protobuf then hands
    the string over as bytes)."""
    names = [n.name for n in m.graph.node if n.name] + _names(m)
    name = _pick(rng, [x for x in names if x])
    if not name:
        return data
    i = data.find(name.encode())
    return data if i < 0 else data[:i] + b"\xff" + data[i + 1:]


def mutate(data, rng):
    """Bytes of a mutated ONNX model derived from the serialized seed `data`."""
    m = onnx.ModelProto()
    m.ParseFromString(data)
    for _ in range(int(rng.integers(1, 4))):
        try:
            MUTATORS[int(rng.integers(len(MUTATORS)))](m, rng)
        except (ValueError, TypeError, IndexError, AttributeError, KeyError):
            pass  # a mutation that does not fit what earlier ones left: keep the case as is
    out = m.SerializeToString()
    r = rng.random()
    if r < 0.05:
        return _bad_utf8(out, rng, m)
    if r < 0.08:
        return out[: int(rng.integers(len(out)))]
    if r < 0.1:
        b = bytearray(out)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return bytes(b)
    return out
