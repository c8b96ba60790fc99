"""A MobileNetV2 (Sandler et al. 2018, torchvision's layer list) as float ONNX with seeded
weights, quantized by onnxruntime's quantize_static like the ResNet-50 benchmark model.

Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, residual add when the
shape allows), ReLU6 as Clip(0, 6), BatchNorm already folded (convs carry a bias),
global average pool, 1000-class classifier. Input 224 x 224.
"""
import os

import numpy as np

from synapse_gpu.examples.resnet50 import images, quantize_formats

# (expansion t, channels c, repeats n, first stride s), torchvision's table
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


def float_mobilenet_v2(seed=0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = [0]

    def conv(x, cin, cout, k, s, group=1, relu6=True):
        i = count[0] = count[0] + 1
        w = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
                                      strides=[s, s], pads=[k // 2] * 4, group=group))
        if not relu6:
            return f"c{i}"
        nodes.append(helper.make_node("Clip", [f"c{i}", "zero", "six"], [f"r{i}"]))
        return f"r{i}"

    inits += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    h, cin = conv("data", 3, 32, 3, 2), 32
    for t, c, n, s in BLOCKS:
        for j in range(n):
            stride = s if j == 0 else 1
            e = conv(h, cin, cin * t, 1, 1) if t != 1 else h
            d = conv(e, cin * t, cin * t, 3, stride, group=cin * t)
            p = conv(d, cin * t, c, 1, 1, relu6=False)
            if stride == 1 and cin == c:
                nodes.append(helper.make_node("Add", [h, p], [p + "_sum"]))
                p = p + "_sum"
            h, cin = p, c
    h = conv(h, cin, 1280, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["feat"]))
    w = rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280)
    inits.append(numpy_helper.from_array(w.astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, 1000).astype(np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["feat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "mobilenet_v2",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def quantized_mobilenet_v2(out_dir, formats=("QDQ", "QOperator"), calib_images=4, reduce_range=False):
    """{format: path} of quantized files in out_dir (reused when present); formats as in
    synapse_gpu/examples/resnet50.py (QOperator-uint8: uint8 activations)."""
    import onnx

    os.makedirs(out_dir, exist_ok=True)
    f32 = os.path.join(out_dir, "mobilenet_v2_f32.onnx")
    if not os.path.exists(f32):
        onnx.save(float_mobilenet_v2(), f32)
    return quantize_formats(f32, os.path.join(out_dir, "mobilenet_v2"), images(calib_images, 1),
                            formats, reduce_range)
