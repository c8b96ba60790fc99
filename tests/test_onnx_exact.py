"""Bit-exactness with onnxruntime, end to end, on a QOperator model whose every tensor
between ops is quantized: a RegNet-like network with squeeze-excitation blocks (conv,
grouped conv, global average pool, sigmoid table, broadcast QLinearMul, residual
QLinearAdd) quantized by quantize_static. Int8 activations: onnxruntime's s8s8 kernels
are exact on every x86 (its u8s8 ones saturate without VNNI, tests/ort_helpers.py).
ResNet-50's end-to-end exactness is asserted in tests/test_onnx_resnet.py."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from synapse_gpu import InferenceSession
from synapse_gpu.onnx.importer import import_onnx


def _regnet_like(rng):
    """stem conv -> 2 x [1x1 conv, grouped 3x3 conv, SE, 1x1 conv, + residual, relu] -> GAP
    -> Gemm. SE: GAP -> 1x1 conv -> relu -> 1x1 conv -> sigmoid -> channel-wise Mul."""
    nodes, inits = [], []

    def w(name, shape, gain=2.0):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * np.sqrt(gain / np.prod(shape[1:]))).astype(np.float32),
            name))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, shape[0]).astype(np.float32),
                                             name + "_b"))
        return [name, name + "_b"]

    def conv(x, name, shape, group=1, relu=True):
        pad = shape[-1] // 2
        nodes.append(helper.make_node("Conv", [x, *w(name + "_w", shape)], [name], group=group,
                                      pads=[pad] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
            return name + "_r"
        return name

    C = 16
    x = conv("x", "stem", (C, 3, 3, 3))
    for i in range(2):
        h = conv(x, f"b{i}a", (C, C, 1, 1))
        h = conv(h, f"b{i}g", (C, 4, 3, 3), group=C // 4)
        nodes.append(helper.make_node("GlobalAveragePool", [h], [f"b{i}p"]))
        s = conv(f"b{i}p", f"b{i}se1", (4, C, 1, 1))
        s = conv(s, f"b{i}se2", (C, 4, 1, 1), relu=False)
        nodes.append(helper.make_node("Sigmoid", [s], [f"b{i}sg"]))
        nodes.append(helper.make_node("Mul", [h, f"b{i}sg"], [f"b{i}m"]))
        h = conv(f"b{i}m", f"b{i}c", (C, C, 1, 1), relu=False)
        nodes.append(helper.make_node("Add", [h, x], [f"b{i}add"]))
        nodes.append(helper.make_node("Relu", [f"b{i}add"], [f"b{i}out"]))
        x = f"b{i}out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["feat"]))
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((10, C)) / np.sqrt(C)).astype(np.float32), "fc"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["feat", "fc", "fc_b"], ["logits"], transB=1))
    g = helper.make_graph(nodes, "regnet_like",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_regnet_like_se_blocks_bit_identical_to_onnxruntime(tmp_path):
    rng = np.random.default_rng(11)
    src, dst = tmp_path / "f32.onnx", tmp_path / "qop.onnx"
    onnx.save(_regnet_like(rng), src)
    calib = rng.normal(0, 1, (8, 3, 32, 32)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 2]} for i in range(0, 8, 2)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    model = onnx.load(dst)
    ops = {n.op_type for n in model.graph.node}
    assert {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearGlobalAveragePool"} <= ops, ops
    g = import_onnx(model)
    x = rng.normal(0, 1, (64, 3, 32, 32)).astype(np.float32)
    ours = InferenceSession(g, device="cpu").run(None, {"x": x}, output_type="int8")[0]
    ref = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    spec = g.outputs[0]
    np.testing.assert_array_equal(ours, np.rint(ref / np.float32(spec.scale)) + spec.zero_point)
