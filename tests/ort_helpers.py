"""Shared by the reference-op tests: seeded int8 data, single-node onnxruntime models,
and the agreement figure printed for docs/ops_rules.md."""
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
