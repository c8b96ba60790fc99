"""The LayerNormalization importer rule (synapse_gpu/onnx/layernorm.py): DequantizeLinear
-> LayerNormalization -> QuantizeLinear becomes one `layernorm` node, exact on every
backend against python integers (tests/test_ref_layernorm.py); agreement with
onnxruntime's float LayerNormalization between int8 DequantizeLinear/QuantizeLinear is
measured (`pytest tests/test_onnx_layernorm.py -s -k onnxruntime`).
"""
import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import UnsupportedOpError
from synapse_gpu.onnx.importer import import_onnx
from synapse_gpu.reference.layernorm import layernorm_params

from ort_helpers import agreement, rand_i8, rng_for
from synapse_devices import device  # noqa: F401  (fixture)
from test_ref_layernorm import scalar_layernorm

F32 = np.float32
N = helper.make_node


def ln_model(shape, axis, q, gamma, beta, quantized_params=False, eps=1e-5):
    s_x, zx, s_y, zy = q
    inits = {"xs": F32(s_x), "xz": np.int8(zx), "ys": F32(s_y), "yz": np.int8(zy)}
    nodes = [N("DequantizeLinear", ["x", "xs", "xz"], ["f"])]
    if quantized_params:  # as quantize_static writes them: int8 scale, int32 bias
        s_g = F32(np.abs(gamma).max() / 127)
        inits.update(gq=np.rint(gamma / s_g).astype(np.int8), gs=s_g,
                     bq=np.rint(beta / (F32(s_x) * s_g)).astype(np.int32), bs=F32(F32(s_x) * s_g))
        nodes += [N("DequantizeLinear", ["gq", "gs"], ["gamma"]), N("DequantizeLinear", ["bq", "bs"], ["beta"])]
    else:
        inits.update(gamma=gamma.astype(F32), beta=beta.astype(F32))
    nodes += [N("LayerNormalization", ["f", "gamma", "beta"], ["g"], axis=axis, epsilon=eps),
              N("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", *shape[1:]])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def real_params(m):
    """The float32 gamma/beta the file states (DequantizeLinear'd when quantized)."""
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    if "gq" in init:
        return init["gq"].astype(F32) * init["gs"], init["bq"].astype(F32) * init["bs"]
    return init["gamma"], init["beta"]


@pytest.mark.parametrize("shape,axis", [((3, 6, 32), -1), ((2, 4, 3, 5), 2)])
@pytest.mark.parametrize("q", [(0.05, -128, 0.03, 127), (0.04, 127, 0.05, -128)])
@pytest.mark.parametrize("quantized_params", [False, True])
def test_layernorm_exact_on_every_backend(device, shape, axis, q, quantized_params):  # noqa: F811
    rng = rng_for(shape, q[1], quantized_params)
    inner = shape[axis % len(shape):]
    gamma = (rng.uniform(0.3, 2.0, inner) * rng.choice([-1, 1], inner)).astype(F32)
    beta = rng.normal(0, 0.5, inner).astype(F32)
    m = ln_model(shape, axis, q, gamma, beta, quantized_params)
    g = import_onnx(m)
    assert [n.op for n in g.nodes] == ["layernorm"]
    x = rand_i8(rng, shape)
    sess = InferenceSession(g, device=device)
    y = sess.run(None, {"x": x}, output_type="int8")[0]
    gm, bt = real_params(m)
    p, a = layernorm_params(gm, bt, 1e-5, q[0], q[2])
    np.testing.assert_array_equal(y, scalar_layernorm(x, p["g"], p["b"], axis % len(shape),
                                                      a["eps_term"], a["shift"], q[1], q[3]))
    np.testing.assert_array_equal(sess.run(None, {"x": x[1:2]}, output_type="int8")[0], y[1:2])


def test_layernorm_over_the_batch_is_refused():
    m = ln_model((2, 4), 0, (0.05, 0, 0.05, 0), np.ones((2, 4)), np.zeros((2, 4)))
    with pytest.raises(UnsupportedOpError, match=r"\(op LayerNormalization\).*batch"):
        import_onnx(m)


def test_onnxruntime_agreement():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(17)
    ours, theirs = [], []
    for k in range(24):
        n = int(rng.choice([16, 64, 256, 768]))
        q = (float(F32(rng.uniform(0.01, 0.2))), int([-128, 127, rng.integers(-128, 128)][k % 3]),
             float(F32(rng.uniform(0.01, 0.05))), int(rng.integers(-30, 30)))
        gamma = rng.uniform(0.5, 1.5, n).astype(F32)
        beta = rng.normal(0, 0.3, n).astype(F32)
        m = ln_model((1, 8, n), -1, q, gamma, beta, quantized_params=bool(k % 2))
        x = rand_i8(rng, (4, 8, n))
        ours.append(InferenceSession(import_onnx(m), device="cpu").run(None, {"x": x}, output_type="int8")[0].ravel())
        theirs.append(ort.InferenceSession(m.SerializeToString(), so, providers=[
            "CPUExecutionProvider"]).run(None, {"x": x})[0].ravel())
    frac, dmax = agreement("LayerNormalization (QDQ, int8)", np.concatenate(ours), np.concatenate(theirs))
    assert frac > 0.99 and dmax <= 1
