"""The model zoo of tests/test_zoo.py: the nine light_* architectures shipped in the onnx
wheel (onnx/backend/test/data/light/), with seeded random weights, quantized by
onnxruntime's quantize_static (per-channel, QInt8) to QDQ and QOperator files.

The files keep the architecture as shipped (Sum, Softmax, BatchNormalization,
Dropout...): only the weights change. quant_pre_process runs first (BatchNorm after
a conv is folded into it, as a user following onnxruntime's guide would do).
Generated files are cached (``cache_dir()``), keyed on this file's text and the
onnx/onnxruntime versions, so a test run quantizes each model once.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from .resnet50 import images

LIGHT = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
         "shufflenet", "squeezenet", "vgg19", "zfnet512")
FORMATS = ("QDQ", "QOperator")
CALIB_IMAGES = 2


def light_path(name):
    import onnx
    return os.path.join(onnx.__path__[0], "backend", "test", "data", "light", f"light_{name}.onnx")


def cache_dir():
    """$SYNAPSE_ZOO_CACHE, else ~/.cache/synapse_gpu/zoo-<key>; the key changes with this
    file and with the onnx/onnxruntime versions (a new quantizer writes new files)."""
    import onnx
    import onnxruntime
    if os.environ.get("SYNAPSE_ZOO_CACHE"):
        return os.environ["SYNAPSE_ZOO_CACHE"]
    with open(__file__, "rb") as f:
        key = hashlib.sha256(f.read() + onnx.__version__.encode()
                             + onnxruntime.__version__.encode()).hexdigest()[:12]
    return os.path.join(os.path.expanduser("~"), ".cache", "synapse_gpu", f"zoo-{key}")


def _role(name, consumers):
    """(op, input index) of the first real consumer of a weight, looking through Unsqueeze."""
    seen = name
    while True:
        uses = consumers.get(seen, [])
        if not uses:
            return None, None
        n, k = uses[0]
        if n.op_type != "Unsqueeze":
            return n, k
        seen = n.output[0]


def _seeded(shape, node, k, rng):
    op = node.op_type if node is not None else None
    if op == "Conv" and k == 1:  # He init
        return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    if op == "Gemm" and k == 1:
        trans = any(a.name == "transB" and a.i for a in node.attribute)
        return rng.standard_normal(shape) * np.sqrt(2.0 / (shape[1] if trans else shape[0]))
    if op == "BatchNormalization" and k == 1 or op == "Mul":  # gains
        return rng.uniform(0.5, 1.0, shape)
    if op == "BatchNormalization" and k == 4:  # variance
        return rng.uniform(0.5, 2.0, shape)
    return rng.normal(0, 0.1, shape)  # biases, shifts, means


def float_model(name, seed=0):
    """The light model with seeded weights, opset 13 (onnx.ModelProto). The input keeps its
    declared batch of 1: the files reshape to [1, ...], which the importer reads as the batch."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(light_path(name))
    g = model.graph
    rng = np.random.default_rng([seed, LIGHT.index(name)])
    consumers = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            consumers.setdefault(i, []).append((n, k))
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    weights = {}  # every float parameter: ConstantOfShape outputs and float initializers
    for n in g.node:
        if n.op_type == "ConstantOfShape":
            weights[n.output[0]] = tuple(int(v) for v in inits[n.input[0]])
    for t, a in inits.items():
        if a.dtype == np.float32 and t not in {i.name for i in g.input[:1]}:
            weights[t] = a.shape
    new = []
    for t in sorted(weights):
        node, k = _role(t, consumers)
        new.append(numpy_helper.from_array(
            _seeded(weights[t], node, k, rng).astype(np.float32), t))
    keep = [t for t in g.initializer if t.name not in weights and not t.name.endswith("__SHAPE")]
    del g.initializer[:]
    g.initializer.extend(keep + new)
    nodes = [n for n in g.node if n.op_type != "ConstantOfShape"]
    del g.node[:]
    g.node.extend(nodes)
    real_inputs = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(real_inputs)
    model.ir_version = 7  # initializers need not be graph inputs
    return onnx.version_converter.convert_version(model, 13)


def input_name(path):
    import onnx
    return onnx.load(path, load_external_data=False).graph.input[0].name


def quantized(name, formats=FORMATS, seed=0):
    """{format: path} of the quantized light model (and "float": the preprocessed float
    model), generated into cache_dir() on first use."""
    import onnx

    out = os.path.join(cache_dir(), name)
    os.makedirs(out, exist_ok=True)
    src = os.path.join(out, "f32.onnx")
    if not os.path.exists(os.path.join(out, "f32_pre.onnx")):
        onnx.save(float_model(name, seed), src)
    return quantize_file(src, out, formats)


def quantize_file(src, out, formats=FORMATS):
    """quant_pre_process, then quantize_static per-channel QInt8 with CALIB_IMAGES seeded
    224x224 images, into out/f32_pre.onnx and out/<format>.onnx (kept if present)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = os.path.join(out, "f32_pre.onnx")
    if not os.path.exists(pre):
        quant_pre_process(src, pre + ".tmp", skip_symbolic_shape=True)
        os.replace(pre + ".tmp", pre)
        os.remove(src)
    calib = images(CALIB_IMAGES, 1)
    feed = input_name(pre)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{feed: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    paths = {"float": pre}
    for fmt in formats:
        paths[fmt] = os.path.join(out, f"{fmt}.onnx")
        if not os.path.exists(paths[fmt]):
            quantize_static(pre, paths[fmt] + ".tmp.onnx", Reader(),
                            quant_format=getattr(QuantFormat, fmt), per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            os.replace(paths[fmt] + ".tmp.onnx", paths[fmt])
    return paths


def run_synapse(graph, x, batch):
    """int8 outputs of the graph's first output over x, in batches of `batch`, and seconds."""
    import time

    from .. import InferenceSession
    sess = InferenceSession(graph, device="cpu", strict=False)  # densenet is 300+ layers deep
    name = graph.inputs[0].name
    t = time.perf_counter()
    out = [sess.run(None, {name: x[i:i + batch]}, output_type="int8")[0]
           for i in range(0, len(x), batch)]
    return np.concatenate(out), time.perf_counter() - t


def run_onnxruntime(path, graph, x):
    """onnxruntime's outputs on the same file, one image at a time (the files declare a batch
    of 1), as int8 codes of the Synapse output's quantization, and seconds."""
    import time

    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    t = time.perf_counter()
    out = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    seconds = time.perf_counter() - t
    spec = graph.outputs[0]
    return np.rint(out / np.float32(spec.scale)) + spec.zero_point, seconds


def quantization_differences(g1, g2):
    """Nodes (by position) whose output quantization differs between two imported graphs
    of one model: [(name in g1, (scale, zp) in g1, name in g2, (scale, zp) in g2)]."""
    q1 = [(n.name, g1.quant[n.outputs[0]]) for n in g1.nodes]
    q2 = [(n.name, g2.quant[n.outputs[0]]) for n in g2.nodes]
    if [n.op for n in g1.nodes] != [n.op for n in g2.nodes]:
        return [("graphs differ", len(q1), "", len(q2))]
    return [(a, qa, b, qb) for (a, qa), (b, qb) in zip(q1, q2) if qa != qb]


def prefix(graph, k):
    """The graph's first k nodes, with node k-1's output as the only output (int8): the
    part of two imports of one model that can be compared before their scales part."""
    import copy

    from ..graph import Graph, TensorSpec
    from ..shapes import infer_shapes
    nodes = copy.deepcopy(graph.nodes[:k])
    t = nodes[-1].outputs[0]
    s, z = graph.quant[t]
    partial = Graph(graph.inputs, [TensorSpec(t, (1,), s, z)], nodes, graph.buffers, graph.quant,
                    graph.metadata)
    shape = infer_shapes(partial)[t]
    used = {b for n in nodes for b in n.params.values()}
    return Graph(graph.inputs, [TensorSpec(t, tuple(shape), s, z)], nodes,
                 {b: v for b, v in graph.buffers.items() if b in used}, graph.quant,
                 graph.metadata)
