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
    p, a = layernorm_params(gm.reshape(-1), bt.reshape(-1), 1e-5, q[0], q[2])
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


def norm_model(op, shape, q, gamma, beta, opset, **attrs):
    s_x, zx, s_y, zy = q
    inits = {"xs": F32(s_x), "xz": np.int8(zx), "ys": F32(s_y), "yz": np.int8(zy),
             "gamma": gamma.astype(F32), "beta": beta.astype(F32)}
    nodes = [N("DequantizeLinear", ["x", "xs", "xz"], ["f"]),
             N(op, ["f", "gamma", "beta"], ["g"], **attrs), N("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "norm", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", *shape[1:]])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


NORMS = {  # name -> (op, opset, attrs, number of scale values, K, m)
    "instance": ("InstanceNormalization", 17, {}, 6, 6, 1),
    "group_per_group": ("GroupNormalization", 18, {"num_groups": 3}, 3, 3, 2 * 20),
    "group_per_channel": ("GroupNormalization", 21, {"num_groups": 2}, 6, 2, 3 * 20),
}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_instance_and_group_norm_exact_on_every_backend(device, name):  # noqa: F811
    op, opset, attrs, per, K, m = NORMS[name]
    shape, q = (3, 6, 4, 5), (0.05, 11, 0.04, -9)
    rng = rng_for(len(name))
    gamma, beta = rng.uniform(0.3, 2.0, per).astype(F32), rng.normal(0, 0.5, per).astype(F32)
    g = import_onnx(norm_model(op, shape, q, gamma, beta, opset, **attrs))
    assert "layernorm" in [n.op for n in g.nodes]
    x = rand_i8(rng, shape)
    y = InferenceSession(g, device=device).run(None, {"x": x}, output_type="int8")[0]
    C, G = shape[1], K
    rows = (np.repeat(gamma, C // per), np.repeat(beta, C // per))
    if m == 1:
        p, a = layernorm_params(rows[0].reshape(-1, 1), rows[1].reshape(-1, 1), 1e-5, q[0], q[2], n=20)
        want = scalar_layernorm(x, p["g"], p["b"], 2, a["eps_term"], a["shift"], q[1], q[3])
    else:
        p, a = layernorm_params(*(np.repeat(v, 20).reshape(G, m) for v in rows), 1e-5, q[0], q[2])
        want = scalar_layernorm(x.reshape(3, G, m), p["g"], p["b"], 2, a["eps_term"], a["shift"],
                                q[1], q[3]).reshape(shape)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("name", sorted(NORMS))
def test_instance_and_group_norm_onnxruntime_agreement(name):
    op, opset, attrs, per, K, m = NORMS[name]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(len(name))
    ours, theirs = [], []
    for k in range(6):
        q = (float(F32(rng.uniform(0.01, 0.2))), int([-128, 127, rng.integers(-128, 128)][k % 3]),
             float(F32(rng.uniform(0.01, 0.05))), int(rng.integers(-30, 30)))
        gamma, beta = rng.uniform(0.5, 1.5, per).astype(F32), rng.normal(0, 0.3, per).astype(F32)
        mdl = norm_model(op, (1, 6, 4, 5), q, gamma, beta, opset, **attrs)
        x = rand_i8(rng, (4, 6, 4, 5))
        ours.append(InferenceSession(import_onnx(mdl), device="cpu").run(None, {"x": x}, output_type="int8")[0].ravel())
        try:
            sess = ort.InferenceSession(mdl.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # an opset this onnxruntime does not implement
            pytest.skip(f"onnxruntime: {str(e)[:120]}")
        theirs.append(sess.run(None, {"x": x})[0].ravel())
    frac, dmax = agreement(f"{op} opset {opset} (QDQ, int8)", np.concatenate(ours), np.concatenate(theirs))
    assert frac > 0.99 and dmax <= 1


def test_decomposed_layernorm_from_quantize_static_is_one_node(tmp_path):
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add (opset < 17 exports), with the
    Q/DQ pairs quantize_static puts on its Add/Mul tensors, becomes one layernorm whose
    params are those of LayerNormalization(x, gamma, beta) at the block's outer scales."""
    from onnx import save
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    rng = np.random.default_rng(0)
    nodes = [N("MatMul", ["x", "w"], ["h"]), N("ReduceMean", ["h"], ["mu"], axes=[-1]),
             N("Sub", ["h", "mu"], ["c"]), N("Pow", ["c", "two"], ["c2"]),
             N("ReduceMean", ["c2"], ["var"], axes=[-1]), N("Add", ["var", "eps"], ["ve"]),
             N("Sqrt", ["ve"], ["sd"]), N("Div", ["c", "sd"], ["z"]), N("Mul", ["z", "gamma"], ["zg"]),
             N("Add", ["zg", "beta"], ["ln"]), N("MatMul", ["ln", "w2"], ["y"])]
    inits = dict(w=rng.standard_normal((16, 32)).astype(F32), two=np.array(2, F32), eps=np.array(1e-5, F32),
                 gamma=rng.uniform(.5, 1.5, 32).astype(F32), beta=rng.normal(0, .2, 32).astype(F32),
                 w2=rng.standard_normal((32, 8)).astype(F32))
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 8])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": rng.standard_normal((1, 5, 16)).astype(F32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    graph = import_onnx(str(tmp_path / "q.onnx"))
    assert [n.op for n in graph.nodes] == ["dense", "layernorm", "dense"]
    ln = graph.nodes[1]
    init = {t.name: numpy_helper.to_array(t) for t in
            __import__("onnx").load(str(tmp_path / "q.onnx")).graph.initializer}
    real = {k: (init[f"{k}_quantized"].astype(F32) - init.get(f"{k}_zero_point", 0)) * init[f"{k}_scale"]
            for k in ("gamma", "beta")}
    p, a = layernorm_params(real["gamma"], real["beta"], F32(1e-5), graph.quant[ln.inputs[0]][0],
                            graph.quant[ln.outputs[0]][0])
    for role in ("g", "b"):
        np.testing.assert_array_equal(graph.buffers[ln.params[role]], p[role])
    assert {k: ln.attrs[k] for k in a} == a and ln.attrs["axis"] == 2
