"""Shared by the reference-op tests: seeded int8 data, single-node onnxruntime models,
and the agreement figure printed for docs/ops_rules.md."""
import functools

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def rng_for(*parts):
    """A generator seeded by the test's parameters: each case has its own fixed data."""
    return np.random.default_rng([int(v) % 2 ** 32 for p in parts for v in np.ravel(p)])


def rand_i8(rng, shape):
    """Uniform int8 with both ends of the range present."""
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    x.flat[0], x.flat[-1] = -128, 127
    return x


def ort_node(op, names, feeds, inits, attrs=None, domain="", out=TensorProto.INT8):
    """Run one onnxruntime node (CPU, no graph optimization) on feeds + initializers."""
    node = helper.make_node(op, names, ["y"], domain=domain or None, **(attrs or {}))
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in feeds.items()]
    graph = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", out, None)],
                              initializer=[numpy_helper.from_array(np.asarray(a), n)
                                           for n, a in inits.items()])
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def agreement(name, ours, theirs):
    d = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
    frac = float((d == 0).mean())
    print(f"\nAGREEMENT {name}: {d.size} outputs, identical {frac:.7f} "
          f"({int((d != 0).sum())} differ), max difference {int(d.max())} steps")
    return frac, int(d.max())


@functools.cache
def ort_u8s8_exact():
    """Whether onnxruntime's uint8 x int8 integer kernels are exact on this CPU.

    On x86 without AVX-512 VNNI (AVX2), MLAS multiplies uint8 by int8 with vpmaddubsw,
    which adds each pair of adjacent products into int16 WITH SATURATION (onnxruntime
    issue #14642): 255 * 127 * 2 = 64770 does not fit. QLinearConv/QLinearMatMul/QGemm
    on uint8 activations, and the QDQ path (which turns int8 activations into uint8),
    are then inexact there. Probed once per process at the code extremes.
    """
    a = np.full((1, 64), 255, np.uint8)
    b = np.full((64, 2), 127, np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node], "probe", [helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"a": a})[0]
    return bool((y == a.astype(np.int64) @ b.astype(np.int64)).all())


def ort_weight_range(activation_dtype):
    """[lo, hi) of random int8 weights that onnxruntime multiplies exactly with these
    activations on this CPU: the full range, or 7 bits where its u8s8 kernel saturates
    (|w| <= 64: 255 * 64 * 2 = 32640 < 2^15; what onnxruntime's own reduce_range does)."""
    if np.dtype(activation_dtype) == np.uint8 and not ort_u8s8_exact():
        return -64, 65
    return -128, 128
