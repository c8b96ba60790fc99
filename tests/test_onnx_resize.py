"""Resize mode linear (synapse_gpu/onnx/movement.py -> resize_linear): exact on every
backend against the weights the rule states (reference/resize.py, itself tested against
python loops), and its agreement with onnxruntime's float32 Resize between int8
DequantizeLinear/QuantizeLinear (`pytest tests/test_onnx_resize.py -s -k onnxruntime`)."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.onnx.importer import import_onnx

from ort_helpers import agreement, rand_i8, rng_for
from synapse_devices import device  # noqa: F401  (fixture)
from test_ref_resize import loop_resize

F32 = np.float32
N = helper.make_node
CASES = {  # name -> (per-sample shape, coordinate mode, scales)
    "2x_half_pixel": ((3, 4, 5), "half_pixel", [1, 1, 2, 2]),
    "2x_align_corners": ((2, 4, 4), "align_corners", [1, 1, 2, 2]),
    "1.5x_asymmetric": ((2, 5, 6), "asymmetric", [1, 1, 1.5, 1.5]),
    "down_pytorch_half_pixel": ((2, 8, 9), "pytorch_half_pixel", [1, 1, 0.5, 0.75]),
    "1d_3x": ((3, 7), "half_pixel", [1, 1, 3]),
}


def resize_model(shape, coord, scales, q):
    s_x, zx, s_y, zy = q
    nodes = [N("DequantizeLinear", ["x", "xs", "xz"], ["f"]),
             N("Resize", ["f", "", "sc"], ["g"], mode="linear", coordinate_transformation_mode=coord),
             N("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    inits = {"xs": F32(s_x), "xz": np.int8(zx), "ys": F32(s_y), "yz": np.int8(zy), "sc": np.array(scales, F32)}
    g = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", *shape])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("q", [(0.05, -128, 0.05, -128), (0.03, 127, 0.04, 9)])
def test_resize_linear_exact_on_every_backend(device, name, q):  # noqa: F811
    shape, coord, scales = CASES[name]
    g = import_onnx(resize_model(shape, coord, scales, q))
    (node,) = g.nodes
    assert node.op == "resize_linear"
    x = rand_i8(rng_for(len(name), q[1]), (3, *shape))
    sess = InferenceSession(g, device=device)
    y = sess.run(None, {"x": x}, output_type="int8")[0]
    idx, w = g.buffers[node.params["indices"]], g.buffers[node.params["weights"]]
    lists, s, ws = [], 0, 0
    for n in node.attrs["sizes"]:
        lists.append((idx[s:s + n], idx[s + n:s + 2 * n], w[ws:ws + n]))
        s, ws = s + 2 * n, ws + n
    a = node.attrs
    np.testing.assert_array_equal(y, loop_resize(x, lists, a["frac_bits"], a["x_zero_point"],
                                                 a["y_zero_point"], a["multiplier"], a["shift"]))
    np.testing.assert_array_equal(sess.run(None, {"x": x[2:]}, output_type="int8")[0], y[2:])


def test_onnxruntime_agreement():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(8)
    ours, theirs = [], []
    for k in range(4):
        for name, (shape, coord, scales) in sorted(CASES.items()):
            q = (float(F32(rng.uniform(0.01, 0.1))), int([-128, 127, rng.integers(-128, 128)][k % 3]),
                 float(F32(rng.uniform(0.01, 0.1))), int(rng.integers(-128, 128)))
            m = resize_model(shape, coord, scales, q)
            x = rand_i8(rng, (4, *shape))
            ours.append(InferenceSession(import_onnx(m), device="cpu").run(None, {"x": x}, output_type="int8")[0].ravel())
            theirs.append(ort.InferenceSession(m.SerializeToString(), so, providers=[
                "CPUExecutionProvider"]).run(None, {"x": x})[0].ravel())
    frac, dmax = agreement("Resize linear (QDQ, int8)", np.concatenate(ours), np.concatenate(theirs))
    assert frac > 0.99 and dmax <= 1  # float32 ties and 15-bit weights (1/3 is not exact)
