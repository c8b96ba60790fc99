"""Reading an ONNX model defensively: parse, check the structure, convert tensors safely.

Everything here runs BEFORE any array of a declared size is allocated: a model
may claim a 10^9 x 10^9 weight in a few bytes of protobuf, so each tensor's
dims, element count and stored byte count are checked against each other and
against MAX_ELEMS first. Failures are ModelFormatError (malformed) or DtypeError
(an element type the import cannot use), naming the tensor or node.
"""
from __future__ import annotations

import math
import os

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from ..errors import DtypeError, ModelFormatError, OnnxImportError

# Per tensor (initializers, constants) and per sample (activations). 2^28 int8
# elements is 256 MiB per sample, far above any model Synapse runs, far below
# what would exhaust a host.
MAX_ELEMS = 1 << 28
MAX_DIM = 1 << 31

_NP_TYPES = {
    TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64,
    TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16,
    TensorProto.UINT16: np.uint16, TensorProto.INT32: np.int32, TensorProto.UINT32: np.uint32,
    TensorProto.INT64: np.int64, TensorProto.UINT64: np.uint64, TensorProto.BOOL: np.bool_,
}
# The repeated field that holds a tensor's values when raw_data is not used.
_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.FLOAT16: "int32_data",
    TensorProto.DOUBLE: "double_data", TensorProto.INT8: "int32_data",
    TensorProto.UINT8: "int32_data", TensorProto.INT16: "int32_data",
    TensorProto.UINT16: "int32_data", TensorProto.INT32: "int32_data",
    TensorProto.UINT32: "uint64_data", TensorProto.INT64: "int64_data",
    TensorProto.UINT64: "uint64_data", TensorProto.BOOL: "int32_data",
}


def type_name(elem_type):
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def load_model(model):
    """ModelProto from a path, bytes or ModelProto; external data is refused."""
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()  # the passes below rewrite the graph: never the caller's
        proto.CopyFrom(model)
    else:
        if isinstance(model, (bytes, bytearray, memoryview)):
            data, src = bytes(model), "the given bytes"
        elif isinstance(model, (str, os.PathLike)):
            src = os.fspath(model)
            try:
                with open(src, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise ModelFormatError(f"cannot read ONNX model {src!r}: {e}") from None
        else:
            raise TypeError(f"import_onnx takes a path, bytes or onnx.ModelProto, not "
                            f"{type(model).__name__}")
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as e:
            raise ModelFormatError(f"{src} is not a valid ONNX protobuf (truncated or corrupted?): "
                                   f"{e}") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise ModelFormatError("the ONNX model has no graph or no nodes (empty or truncated file?)")
    return proto


def check_tensor(t, what):
    """Dims, element count and stored size of a TensorProto agree and are sane."""
    if t.data_location == TensorProto.EXTERNAL or t.external_data:
        raise OnnxImportError(f"{what} {t.name!r}: external data is not read by the importer; "
                              "load the model with onnx.load(path) and pass the ModelProto")
    if t.data_type not in _NP_TYPES:
        raise DtypeError(f"{what} {t.name!r}: element type {type_name(t.data_type)} is not "
                         "supported (int8/uint8/int32/int64/float tensors are)")
    dims = list(t.dims)
    if any(d < 0 or d > MAX_DIM for d in dims):
        raise ModelFormatError(f"{what} {t.name!r}: invalid dims {dims}")
    n = math.prod(dims)
    if n > MAX_ELEMS:
        raise ModelFormatError(f"{what} {t.name!r}: {n} elements ({dims}) exceeds the import "
                               f"limit of {MAX_ELEMS}")
    itemsize = np.dtype(_NP_TYPES[t.data_type]).itemsize
    if t.HasField("raw_data"):
        stored, need = len(t.raw_data), n * itemsize
    else:
        stored, need = len(getattr(t, _FIELD[t.data_type])), n
    if stored != need:
        raise ModelFormatError(f"{what} {t.name!r}: dims {dims} need {need} "
                               f"{'bytes' if t.HasField('raw_data') else 'values'}, the file "
                               f"holds {stored} (truncated or corrupted)")


def to_array(t, what):
    check_tensor(t, what)
    a = numpy_helper.to_array(t)
    return np.asarray(a, dtype=_NP_TYPES[t.data_type])


def check_structure(graph):
    """Names unique, every input produced, and the nodes in a topological order.

    Returns the nodes sorted (ties kept in file order). Raises ModelFormatError
    for a missing initializer, a tensor produced twice, or a cycle.
    """
    known = {}
    for t in graph.initializer:
        if t.name in known:
            raise ModelFormatError(f"initializer {t.name!r} is defined twice")
        check_tensor(t, "initializer")
        known[t.name] = None
    if graph.sparse_initializer:
        raise OnnxImportError("sparse initializers are not supported; densify the model first")
    for i in graph.input:
        known.setdefault(i.name, None)  # old IRs list initializers among the inputs
    producer = {}
    for idx, n in enumerate(graph.node):
        if not isinstance(n.op_type, str) or not isinstance(n.domain, str):  # protobuf: bytes
            raise ModelFormatError(f"node {idx}: op type {n.op_type!r} is not text (invalid UTF-8)")
        for o in n.output:
            if not o:
                continue
            if o in known or o in producer:
                raise ModelFormatError(f"tensor {o!r} is produced twice (node {label(n)!r}, op "
                                       f"{n.op_type}); an ONNX graph assigns each name once")
            producer[o] = idx
    for n in graph.node:
        for i in n.input:
            if i and i not in known and i not in producer:
                raise ModelFormatError(f"node {label(n)!r} (op {n.op_type}) reads {i!r}, which is "
                                       "no initializer, graph input or node output (missing "
                                       "initializer?)")
    for o in graph.output:
        if o.name not in known and o.name not in producer:
            raise ModelFormatError(f"graph output {o.name!r} is produced by no node")
    waiting = [len({i for i in n.input if i in producer}) for n in graph.node]
    readers = {}
    for idx, n in enumerate(graph.node):
        for i in {i for i in n.input if i in producer}:
            readers.setdefault(i, []).append(idx)
    ready = [idx for idx, w in enumerate(waiting) if w == 0]
    order = []
    while ready:
        idx = min(ready)
        ready.remove(idx)
        order.append(graph.node[idx])
        for o in graph.node[idx].output:
            for r in readers.get(o, []):
                waiting[r] -= 1
                if waiting[r] == 0:
                    ready.append(r)
    if len(order) != len(graph.node):
        stuck = [label(graph.node[i]) for i, w in enumerate(waiting) if w > 0]
        raise ModelFormatError(f"the ONNX graph has a cycle through nodes {stuck[:5]}")
    return order


def label(node):
    """A node's name for messages (ONNX names are optional)."""
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"
