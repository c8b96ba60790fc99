"""The new op families in a model onnxruntime's quantize_static really writes (QDQ):
Conv -> HardSwish (left in float) -> Slice -> Conv -> x*Sigmoid(x) -> Resize nearest ->
ConvTranspose -> ReduceMean -> Flatten -> Gemm. The float ops between quantized regions go
through the function pre-pass and the island pass (movement ops commute with Q); every
int8 logit must equal onnxruntime's (graph optimizations off: its fused u8s8 kernels
saturate on CPUs without VNNI, tests/ort_helpers.py)."""
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, save
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from synapse_gpu import InferenceSession
from synapse_gpu.onnx.importer import import_onnx

F = np.float32
N = helper.make_node


def float_model(rng):
    def w(*s):
        return (rng.standard_normal(s) * np.sqrt(2 / np.prod(s[1:]))).astype(F)
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), N("HardSwish", ["c1"], ["h1"]),
             N("Slice", ["h1", "st", "en", "ax"], ["s1"]),
             N("Conv", ["s1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             N("Sigmoid", ["c2"], ["sg"]), N("Mul", ["c2", "sg"], ["silu"]),
             N("Resize", ["silu", "", "sc"], ["up"], mode="nearest"),
             N("ConvTranspose", ["up", "wt", "bt"], ["ct"], strides=[2, 2], pads=[1, 1, 1, 1],
               output_padding=[1, 1]),
             N("ReduceMean", ["ct"], ["rm"], axes=[2, 3], keepdims=1), N("Flatten", ["rm"], ["fl"]),
             N("Gemm", ["fl", "wf", "bf"], ["y"], transB=1)]
    inits = dict(w1=w(8, 3, 3, 3), b1=rng.normal(0, .1, 8).astype(F), st=np.array([0], np.int64),
                 en=np.array([4], np.int64), ax=np.array([1], np.int64), w2=w(6, 4, 3, 3),
                 b2=rng.normal(0, .1, 6).astype(F), sc=np.array([1, 1, 2, 2], F), wt=w(6, 5, 3, 3),
                 bt=rng.normal(0, .1, 5).astype(F), wf=w(10, 5), bf=np.zeros(10, F))
    g = helper.make_graph(nodes, "families", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_quantize_static_model_equals_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    save(float_model(rng), tmp_path / "f32.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": rng.standard_normal((1, 3, 16, 16)).astype(F)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    path = str(tmp_path / "qdq.onnx")
    quantize_static(str(tmp_path / "f32.onnx"), path, Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    g = import_onnx(path)
    assert [n.op for n in g.nodes] == ["conv2d", "lut", "take", "conv2d", "lut", "mul", "take", "pad",
                                       "take", "conv2d", "global_avg_pool", "flatten", "dense"]
    x = rng.standard_normal((6, 3, 16, 16)).astype(F)
    ours = InferenceSession(g, device="cpu").run(None, {"x": x}, output_type="int8")[0]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    theirs = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    o = g.outputs[0]
    np.testing.assert_array_equal(ours, np.rint(theirs / F(o.scale)) + o.zero_point)
