"""onnxruntime's int8 tensors for `synapse compare --against onnxruntime`.

Synapse nodes are mapped to ONNX tensors by name: the importer names each node
after the ONNX node it came from (onnx/checks.py:label). That node's int8 output
is its own output when the op is integer (QOperator: QLinearConv, ...), else
the QuantizeLinear that follows it, through a Relu/Clip the importer fused as
the output clamp (QDQ: DQ -> Conv -> [Relu] -> Q). A Synapse node with no such
tensor (an importer-made requantize, a shape op on a float tensor) stays
unmapped. As Polygraphy does, the mapped tensors are marked as graph outputs
on a copy of onnxruntime's own optimized model (marking the original would
change which nodes its optimizer fuses).
uint8 codes are shifted by -128 into int8, as the importer does. A tensor the importer
kept as a batch view (onnx/batch_views.py, recorded in the graph's metadata) is brought
into Synapse's layout before the comparison: rows (N*R, *T) -> (N, R, *T), the same
elements in the same order; a moved batch back to axis 0. Any other shape difference
stays a difference.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .errors import InputError
from .onnx.batch_views import METADATA_KEY
from .onnx.checks import label

_CODES = {"int8": np.int8, "uint8": np.uint8}
_FUSED_CLAMPS = ("Relu", "Clip")
# ops that keep their input's element type (they run on the int8 codes)
_SAME_TYPE = {"MaxPool", "Relu", "Clip", "Reshape", "Flatten", "Transpose", "Squeeze",
              "Unsqueeze", "Pad", "Identity", "Concat", "Slice", "Split", "Gather"}


def _load(model):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if not str(model).lower().endswith(".onnx"):
        raise InputError(f"--against onnxruntime needs the ONNX model, not {model}")
    try:
        return onnx.load(str(model))
    except OSError as e:
        raise InputError(f"cannot read {model}: {e}") from None


def _elem_types(proto):
    """tensor -> ONNX elem type where known (shape inference, then int8-op propagation)."""
    import onnx
    from onnx import TensorProto

    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # inference is a help here, never a requirement
        inferred = proto.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)
             if v.type.tensor_type.elem_type}
    types.update((t.name, t.data_type) for t in proto.graph.initializer)
    for n in proto.graph.node:  # ops onnx cannot infer (com.microsoft)
        if not n.output or types.get(n.output[0]):
            continue
        if n.op_type.startswith("QLinear") or n.op_type in ("QuantizeLinear", "QGemm"):
            types[n.output[0]] = TensorProto.INT8  # int8 or uint8: the run tells which
        elif n.op_type in _SAME_TYPE and n.input and n.input[0] in types:
            types[n.output[0]] = types[n.input[0]]
    return types


def onnx_tensor_map(proto, graph):
    """{synapse tensor: (ONNX int8/uint8 tensor, channels_last)} for graph inputs and every
    mappable node. Nodes are found by name, or by the name onnxruntime's optimizer gives
    a fused node (original name + "_token_N"); channels_last marks an NHWC output."""
    from onnx import TensorProto, helper

    types = _elem_types(proto)
    codes = (TensorProto.INT8, TensorProto.UINT8)
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    by_label = {}
    for n in proto.graph.node:
        by_label.setdefault(label(n).split("_token_")[0], n)

    def int8_of(t):
        while True:
            if types.get(t) in codes:
                return t
            users = consumers.get(t, [])
            q = [u for u in users if u.op_type == "QuantizeLinear"]
            if q:
                return q[0].output[0]
            if len(users) != 1 or users[0].op_type not in _FUSED_CLAMPS:
                return None
            t = users[0].output[0]

    mapping = {}
    for t in graph.inputs:
        m = int8_of(t.name)
        if m:
            mapping[t.name] = (m, False)
    for n in graph.nodes:
        src = by_label.get(n.name)
        m = src is not None and src.output and int8_of(src.output[0])
        if m:
            last = any(a.name == "channels_last" and helper.get_attribute_value(a)
                       for a in src.attribute) and m == src.output[0]
            mapping[n.outputs[0]] = (m, last)
    return mapping


def onnxruntime_tensors(model, graph, feeds, options=None):
    """onnxruntime's int8 tensor for each mappable Synapse tensor, from the run users get.

    Returns ({synapse tensor: int8 array}, {synapse tensor: how onnxruntime computed it},
    notes). options: onnxruntime.SessionOptions (default: onnxruntime's defaults, every
    graph optimization on). onnxruntime first optimizes the model (QDQ groups fused
    into QLinear ops, or left in float) and saves the result; the mapped tensors still
    present there are marked as outputs of that optimized graph, run with no further
    optimization, so marking cannot change which nodes were fused.
    """
    import onnx
    import onnxruntime as ort

    proto = _load(model)
    options = options or ort.SessionOptions()
    with tempfile.TemporaryDirectory() as tmp:
        level, path = options.graph_optimization_level, os.path.join(tmp, "optimized.onnx")
        options.optimized_model_filepath = path
        options.log_severity_level = 3  # the "hardware specific optimizations" warning
        plain_sess = ort.InferenceSession(proto.SerializeToString(), options,
                                          providers=["CPUExecutionProvider"])
        options.optimized_model_filepath = ""
        optimized = onnx.load(path)
    ort_feeds = _ort_feeds(plain_sess, graph, feeds)
    plain = plain_sess.run(None, ort_feeds)
    produced = {o: n for n in optimized.graph.node for o in n.output}
    present = set(produced) | {i.name for i in optimized.graph.input}
    mapping = {t: m for t, m in onnx_tensor_map(proto, graph).items() if m[0] in present}
    mapping.update(onnx_tensor_map(optimized, graph))  # fused nodes keep their name's prefix
    outputs = [o.name for o in optimized.graph.output]
    for name, _ in dict.fromkeys(mapping.values()):
        if name in present and name not in outputs:
            optimized.graph.output.append(onnx.ValueInfoProto(name=name))
    fixed = ort.SessionOptions()
    fixed.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    fixed.intra_op_num_threads = options.intra_op_num_threads
    sess = ort.InferenceSession(optimized.SerializeToString(), fixed,
                                providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ort_feeds)))
    notes = []
    if any(not np.array_equal(a, got[n]) for n, a in zip(outputs, plain)):
        notes.append("the marked optimized model's outputs differ from onnxruntime's own run")
    theirs, how = {}, {}
    views = json.loads(graph.metadata.get(METADATA_KEY, "{}"))
    for t, (name, channels_last) in mapping.items():
        a = got.get(name)
        if a is None or a.dtype.name not in _CODES:
            continue
        if channels_last:  # NHWC back to NCHW
            a = np.moveaxis(a, -1, 1)
        a, view = _synapse_layout(a, views.get(name))
        theirs[t] = (a.astype(np.int16) - 128).astype(np.int8) if a.dtype == np.uint8 else a
        how[t] = _how(produced, name) + (f" ({a.dtype.name}" + (", NHWC" if channels_last else "")
                                         + (f", {view}" if view else "") + ")")
    n_views = sum(", batch view" in h for h in how.values())
    if n_views:
        notes.append(f"{n_views} onnxruntime tensors are batch views (the batch merged into "
                     "rows or moved off axis 0): compared element for element in Synapse's "
                     "layout")
    names = {0: "disabled", 1: "basic", 2: "extended", 99: "all"}
    n_nodes = len(set(theirs) - {t.name for t in graph.inputs})
    notes.append(f"onnxruntime (graph optimizations: {names.get(int(level), int(level))}): "
                 f"{n_nodes} of {len(graph.nodes)} Synapse nodes have an int8 tensor in its "
                 "optimized graph")
    return theirs, how, notes


def _synapse_layout(a, view):
    """onnxruntime's tensor of a batch view ([kind, n] from the graph's metadata) in
    Synapse's layout, and how it was read (None: no view, or a shape it does not fit)."""
    if view is None:
        return a, None
    kind, n = view
    if kind == "rows" and a.ndim >= 1 and a.shape[0] % n == 0:
        return a.reshape(a.shape[0] // n, n, *a.shape[1:]), f"batch view: {n} rows per sample"
    if kind == "moved" and 0 < n < a.ndim:
        return np.moveaxis(a, n, 0), f"batch view: batch on axis {n}"
    return a, None


def _how(produced, name):
    """How onnxruntime made tensor `name`: "QLinearConv", or "float Conv + QuantizeLinear"."""
    n = produced.get(name)
    if n is None:
        return "input"
    if n.op_type == "QuantizeLinear" and n.input[0] in produced:
        return f"float {produced[n.input[0]].op_type} + QuantizeLinear"
    return n.op_type


def _ort_feeds(sess, graph, feeds):
    """The user's feeds for onnxruntime: int8 feeds of a float input are dequantized."""
    from .reference.boundary import dequantize

    specs = {t.name: t for t in graph.inputs}
    out = {}
    for i in sess.get_inputs():
        if i.name not in feeds:
            raise InputError(f"onnxruntime input {i.name!r} is not in the feeds {sorted(feeds)}")
        a = np.asarray(feeds[i.name])
        if a.dtype == np.int8 and i.type == "tensor(float)" and i.name in specs:
            a = dequantize(a, specs[i.name].scale, specs[i.name].zero_point)
        out[i.name] = a
    return out
