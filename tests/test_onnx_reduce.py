"""Importer: ReduceMean / ReduceSum / ReduceMax over non-batch axes (synapse_gpu/onnx/reduce.py).

Independent computation: the int64 sum (or max) of the codes along the axes with numpy,
then the documented requantization written out in float32 (docs/SPEC.md's allowed
shortcut); zero tolerance on every backend, per sample. Agreement with onnxruntime's
float ReduceMean/ReduceSum between int8 DequantizeLinear/QuantizeLinear is measured
(`pytest tests/test_onnx_reduce.py -s -k onnxruntime`); ReduceMax is asserted equal.
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

F32 = np.float32
N = helper.make_node


def reduce_model(op, shape, axes, keepdims, q, opset=13):
    s_x, z_x, s_y, z_y = q
    if op == "ReduceSum" or opset >= 18:
        red = N(op, ["f", "axes"], ["g"], keepdims=keepdims)
        extra = {"axes": np.array(axes, np.int64)}
    else:
        red, extra = N(op, ["f"], ["g"], keepdims=keepdims, **({"axes": axes} if axes else {})), {}
    nodes = [N("DequantizeLinear", ["x", "xs", "xz"], ["f"]), red, N("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    inits = {"xs": F32(s_x), "xz": np.int8(z_x), "ys": F32(s_y), "yz": np.int8(z_y), **extra}
    g = helper.make_graph(nodes, "reduce", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", *shape[1:]])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def expected(op, x, axes, keepdims, q):
    s_x, z_x, s_y, z_y = (F32(q[0]), q[1], F32(q[2]), q[3])
    axes = tuple(sorted(a % x.ndim for a in axes))
    if op == "ReduceMax":
        y = x.max(axis=axes, keepdims=bool(keepdims))
        d = (y.astype(np.float32) - F32(z_x)) * s_x  # then QuantizeLinear
        return np.clip(np.rint(d / s_y) + z_y, -128, 127).astype(np.int8) if (s_x, z_x) != (s_y, z_y) else y
    acc = (x.astype(np.int64) - z_x).sum(axis=axes, keepdims=bool(keepdims))
    n = int(np.prod([x.shape[a] for a in axes]))
    spatial = axes == tuple(range(2, x.ndim))
    if op == "ReduceSum":
        M = F32(s_x / s_y)
    else:
        M = F32(s_x / F32(s_y * F32(n))) if spatial else F32(F32(s_x / s_y) / F32(n))
    p = acc.astype(np.float32) * M  # float32: the two 24-bit roundings
    y = np.rint(p) + z_y if spatial else np.rint(p.astype(np.float64) + z_y)  # requant / zp inside
    return np.clip(y, -128, 127).astype(np.int8)


CASES = [  # (input shape, axes, keepdims)
    ((2, 3, 5, 4), [2, 3], 1),  # a spatial mean (mnasnet, SE blocks)
    ((2, 3, 5, 4), [-1, -2], 0),
    ((2, 6, 16), [-1], 1),  # a transformer's last axis
    ((2, 6, 16), [2], 0),
    ((2, 4, 3, 5), [1], 1),  # over channels: transposed last
    ((2, 4, 3, 5), [1, 3], 0),
    ((2, 7), [1], 0),
]
QS = [(0.05, -128, 0.04, 127), (0.02, 127, 0.03, -128), (2.0 ** -6, 5, 2.0 ** -6, 5)]


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax"])
@pytest.mark.parametrize("shape,axes,keepdims", CASES)
@pytest.mark.parametrize("q", QS)
def test_reduce_exact_on_every_backend(device, op, shape, axes, keepdims, q):  # noqa: F811
    if op == "ReduceSum":
        q = (q[0], q[1], q[2] * shape[-1], q[3])  # a scale that holds the sum
    x = rand_i8(rng_for(len(shape), axes, q[1]), (5, *shape[1:]))
    g = import_onnx(reduce_model(op, shape, axes, keepdims, q))
    sess = InferenceSession(g, device=device)
    y = sess.run(None, {"x": x}, output_type="int8")[0]
    np.testing.assert_array_equal(y, expected(op, x, axes, keepdims, q))
    np.testing.assert_array_equal(sess.run(None, {"x": x[3:4]}, output_type="int8")[0], y[3:4])


def test_opset18_axes_input_and_noop():
    q = (0.05, 0, 0.05, 0)
    x = rand_i8(rng_for(18), (3, 4, 6))
    g = import_onnx(reduce_model("ReduceMean", (1, 4, 6), [2], 1, q, opset=18))
    y = InferenceSession(g, device="cpu").run(None, {"x": x}, output_type="int8")[0]
    np.testing.assert_array_equal(y, expected("ReduceMean", x, [2], 1, q))


@pytest.mark.parametrize("axes", [[0], [0, 1], []])
def test_reducing_the_batch_is_refused(axes):
    with pytest.raises(UnsupportedOpError, match=r"\(op ReduceMean\).*(batch|every axis)"):
        import_onnx(reduce_model("ReduceMean", (1, 4, 6), axes, 1, (0.05, 0, 0.05, 0)))


def test_onnxruntime_agreement():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(5)
    for op in ("ReduceMean", "ReduceSum", "ReduceMax"):
        ours, theirs = [], []
        for k in range(4):
            for shape, axes, keepdims in CASES:
                q = (float(F32(rng.uniform(0.01, 0.1))), int([-128, 127, rng.integers(-128, 128)][k % 3]),
                     float(F32(rng.uniform(0.01, 0.1))), int(rng.integers(-128, 128)))
                if op == "ReduceSum":
                    q = (q[0], q[1], float(F32(q[2] * np.sqrt(shape[-1]))), q[3])
                x = rand_i8(rng, (8, *shape[1:]))
                m = reduce_model(op, shape, axes, keepdims, q)
                ours.append(InferenceSession(import_onnx(m), device="cpu").run(
                    None, {"x": x}, output_type="int8")[0].ravel())
                theirs.append(ort.InferenceSession(m.SerializeToString(), so, providers=[
                    "CPUExecutionProvider"]).run(None, {"x": x})[0].ravel())
        frac, dmax = agreement(f"{op} (QDQ, int8)", np.concatenate(ours), np.concatenate(theirs))
        assert (frac, dmax) == (1.0, 0) if op == "ReduceMax" else (frac > 0.99 and dmax <= 1)
