"""The LRN importer rule (synapse_gpu/onnx/lrn.py): DequantizeLinear -> LRN ->
QuantizeLinear becomes one `lrn` node, exact on every backend against the python-loop
computation of tests/test_ref_lrn.py; agreement with onnxruntime's float32 LRN between
int8 DequantizeLinear/QuantizeLinear is measured
(`pytest tests/test_onnx_lrn.py -s -k onnxruntime`).
"""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import UnsupportedOpError
from synapse_gpu.onnx.importer import import_onnx

from ort_helpers import agreement, rand_i8, rng_for
from synapse_devices import device  # noqa: F401  (fixture)
from test_ref_lrn import PARAMS, loop_expected

F32 = np.float32


def lrn_model(q, shape):
    s_x, z_x, s_y, z_y, size, alpha, beta, bias = q
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["f"]),
             helper.make_node("LRN", ["f"], ["g"], size=size, alpha=alpha, beta=beta, bias=bias),
             helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    inits = {"xs": F32(s_x), "xz": np.int8(z_x), "ys": F32(s_y), "yz": np.int8(z_y)}
    g = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", *shape[1:]])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)


@pytest.mark.parametrize("q", PARAMS)
def test_imported_lrn_on_every_backend(device, q):  # noqa: F811
    shape = (3, 10, 5, 4)
    g = import_onnx(lrn_model(q, shape))
    assert [n.op for n in g.nodes] == ["lrn"]
    x = rand_i8(rng_for(q[1], 7), shape)
    sess = InferenceSession(g, device=device)
    y = sess.run(None, {"x": x}, output_type="int8")[0]
    np.testing.assert_array_equal(y, loop_expected(x, q))
    np.testing.assert_array_equal(sess.run(None, {"x": x[2:]}, output_type="int8")[0], y[2:])


def test_lrn_without_positive_bias_is_refused():
    with pytest.raises(UnsupportedOpError, match=r"\(op LRN\).*bias"):
        import_onnx(lrn_model((0.1, 0, 0.1, 0, 5, 1e-4, 0.75, -1.0), (1, 4, 2, 2)))


def test_onnxruntime_agreement():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(4)
    ours, theirs = [], []
    for k in range(30):
        q = (float(F32(rng.uniform(0.01, 0.5))), int([-128, 127, rng.integers(-128, 128)][k % 3]),
             float(F32(rng.uniform(0.01, 0.3))), int(rng.integers(-128, 128)), int(rng.choice([1, 3, 5, 7])),
             float(F32(rng.choice([1e-4, 0.01, 0.2, 1.0]))), float(F32(rng.choice([0.5, 0.75, 1.0]))),
             float(F32(rng.choice([1.0, 2.0, 0.5]))))
        m = lrn_model(q, (1, 16, 6, 6))
        x = rand_i8(rng, (4, 16, 6, 6))
        ours.append(InferenceSession(import_onnx(m), device="cpu").run(None, {"x": x}, output_type="int8")[0].ravel())
        theirs.append(ort.InferenceSession(m.SerializeToString(), so, providers=[
            "CPUExecutionProvider"]).run(None, {"x": x})[0].ravel())
    frac, dmax = agreement("LRN (QDQ, int8)", np.concatenate(ours), np.concatenate(theirs))
    assert frac > 0.999 and dmax <= 1
