"""ResNet-50 for tests and benchmarks: the onnx wheel's light_resnet50 architecture
with seeded random weights, quantized by onnxruntime's quantize_static.

Edits to the architecture, same math, each forced by how quantize_static treats ops:
- Sum -> Add: quantize_static quantizes Add, not Sum; a float Sum -> Relu ->
  AveragePool chain in QDQ has no integer form (the importer rejects it).
- AveragePool 7x7 -> GlobalAveragePool (identical on the 7x7 map): quantize_static
  gives a QDQ AveragePool its input's scale but a QLinearAveragePool a calibrated
  one, so the two formats would carry different scales.
- The Softmax is dropped: top-1 is read from the logits, and an int8 softmax over
  1000 near-uniform classes would collapse to a few codes.
BatchNorm is folded into the convs by quant_pre_process before quantization.
"""
from __future__ import annotations

import os

import numpy as np

FORMATS = {"QDQ": ("QDQ", "QInt8"), "QOperator": ("QOperator", "QInt8"),
           "QOperator-uint8": ("QOperator", "QUInt8")}


def images(n, seed):
    """Smooth random patterns: i.i.d. noise would give every image the same pooled features."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 224), np.linspace(-1, 1, 224), indexing="ij")
    out = np.zeros((n, 3, 224, 224))
    for img in out:
        for c in range(3):
            for _ in range(4):
                f, ph = rng.uniform(1, 8, 2), rng.uniform(0, 2 * np.pi)
                img[c] += rng.normal() * np.sin(np.pi * (f[0] * xx + f[1] * yy) + ph)
        img += rng.normal(0, 0.3, img.shape)
    return out.astype(np.float32)


def float_resnet50(calib, seed=0):
    """The float model (onnx.ModelProto, opset 13), classifier centred on ``calib``."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    path = onnx.__path__[0] + "/backend/test/data/light/light_resnet50.onnx"
    src = onnx.load(path).graph
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in src.initializer}
    params = {}
    for n in src.node:
        if n.op_type == "ConstantOfShape":
            params[n.output[0]] = tuple(int(v) for v in shapes[n.input[0]])
    for name, a in shapes.items():  # the file keeps a few real BN tensors: re-seed them too
        if name.startswith("gpu_0/res") and "SHAPE" not in name:
            params[name] = a.shape
    inits = []
    for name in sorted(params):
        shape = params[name]
        if name.endswith("_w_0"):  # He init; the classifier at unit gain
            gain = 2.0 if len(shape) == 4 else 1.0
            a = rng.standard_normal(shape) * np.sqrt(gain / np.prod(shape[1:]))
        elif name.endswith("_bn_s_0"):  # smaller last-branch gains keep the residual sum tame
            a = rng.uniform(0.5, 1.0, shape) * (0.3 if "branch2c" in name else 1.0)
        elif name.endswith("_bn_riv_0"):
            a = rng.uniform(0.5, 2.0, shape)
        else:  # BN shift and mean, classifier bias
            a = rng.normal(0, 0.1, shape)
        inits.append(numpy_helper.from_array(a.astype(np.float32), name))
    inits.append(numpy_helper.from_array(np.array([-1, 2048], np.int64), "OC2_DUMMY_1"))
    nodes = []
    for n in src.node:
        if n.op_type in ("ConstantOfShape", "Softmax"):
            continue
        if n.op_type == "Sum":
            n = helper.make_node("Add", n.input, n.output, n.name)
        elif n.op_type == "AveragePool":
            n = helper.make_node("GlobalAveragePool", n.input, n.output, n.name)
        n.input[:] = ["data" if i == "gpu_0/data_0" else i for i in n.input]
        n.output[:] = ["logits" if o == "r174" else o for o in n.output]
        nodes.append(n)
    graph = helper.make_graph(
        nodes, "resnet50", [helper.make_tensor_value_info("data", 1, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", 1, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    model = onnx.version_converter.convert_version(model, 13)
    # Centre the classifier (bias = -W mean feature) so the top-1 follows the input.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name="r173"))
    feats = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["r173"], {"data": calib})[0]
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "gpu_0/pred_w_0"))
    for t in model.graph.initializer:
        if t.name == "gpu_0/pred_b_0":
            t.CopyFrom(numpy_helper.from_array((-w @ feats.mean(0)).astype(np.float32), t.name))
    return model


def quantized_resnet50(out_dir, formats=("QDQ", "QOperator"), calib_images=4, seed=0,
                       reduce_range=False):
    """Write f32.onnx and resnet50_<format>.onnx (per-channel int8 weights; 7-bit weights
    with reduce_range, as onnxruntime advises for x86 CPUs without VNNI, whose u8s8 kernels
    saturate on full-range weights) into out_dir; returns {format: path}. Files already
    there are reused."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    os.makedirs(out_dir, exist_ok=True)
    f32, folded = os.path.join(out_dir, "f32.onnx"), os.path.join(out_dir, "f32_folded.onnx")
    calib = images(calib_images, 1)
    if not os.path.exists(folded):
        onnx.save(float_resnet50(calib, seed), f32)
        quant_pre_process(f32, folded)  # folds BN into conv
    return quantize_formats(folded, os.path.join(out_dir, "resnet50"), calib, formats,
                            reduce_range)


def quantize_formats(f32_path, prefix, calib, formats, reduce_range=False):
    """quantize_static of f32_path (input "data", one calibration image per step) to
    <prefix>_<format>[_r7].onnx for each key of FORMATS, per-channel int8 weights (7-bit
    with reduce_range); files already there are reused. Returns {format: path}."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"data": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    paths = {}
    for key in formats:
        fmt, act = FORMATS[key]
        paths[key] = f"{prefix}_{key}{'_r7' if reduce_range else ''}.onnx"
        if not os.path.exists(paths[key]):
            quantize_static(f32_path, paths[key], Reader(), quant_format=getattr(QuantFormat, fmt),
                            per_channel=True, activation_type=getattr(QuantType, act),
                            weight_type=QuantType.QInt8, reduce_range=reduce_range)
    return paths
