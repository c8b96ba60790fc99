"""Importer: Slice, Split, Gather (constant indices), Tile, Expand, Resize nearest,
SpaceToDepth, DepthToSpace (synapse_gpu/onnx/movement.py) on quantized tensors.

Independent computation: onnxruntime runs the same DequantizeLinear -> op ->
QuantizeLinear file (int8, one scale: its float op moves exact values, so its codes
are the moved codes); zero tolerance, on every backend, per sample.
"""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import UnsupportedOpError
from synapse_gpu.onnx.importer import import_onnx

from ort_helpers import rand_i8, rng_for
from synapse_devices import device  # noqa: F401  (fixture)

F32 = np.float32
I64 = np.int64
N = helper.make_node
BIG = np.iinfo(np.int64).max


def model(shape, node, consts=(), n_out=1, opset=18, zp=-7, batch="N"):
    outs = [f"g{k}" for k in range(n_out)]
    node.output[:] = outs
    nodes = [N("DequantizeLinear", ["x", "s", "z"], ["f"]), node,
             *[N("QuantizeLinear", [o, "s", "z"], [f"y{k}"]) for k, o in enumerate(outs)]]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in
             {"s": F32(0.05), "z": np.int8(zp), **dict(consts)}.items()]
    g = helper.make_graph(nodes, "move", [helper.make_tensor_value_info("x", TensorProto.INT8, [batch, *shape])],
                          [helper.make_tensor_value_info(f"y{k}", TensorProto.INT8, None) for k in range(n_out)],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def slice_(starts, ends, axes, steps=None):
    ins = ["f", "st", "en", "ax"] + (["sp"] if steps else [])
    c = {"st": np.array(starts, I64), "en": np.array(ends, I64), "ax": np.array(axes, I64)}
    if steps:
        c["sp"] = np.array(steps, I64)
    return N("Slice", ins, ["g"]), c


def resize(mode, nearest, scales=None, sizes=None):
    ins = ["f", "", "sc" if scales else "", "sz" if sizes else ""]
    c = {"sc": np.array(scales, F32)} if scales else {"sz": np.array(sizes, I64)}
    return N("Resize", ins, ["g"], mode="nearest", coordinate_transformation_mode=mode,
             nearest_mode=nearest), c


CASES = {  # name -> (per-sample shape, (node, constants), outputs)
    "slice_channels": ((6, 5, 4), slice_([1], [4], [1]), 1),
    "slice_steps_negative": ((6, 5, 4), slice_([-1, 0, 3], [-BIG, BIG, 0], [1, 2, 3], [-2, 2, -1]), 1),
    "slice_batch_full": ((6, 5), slice_([0, 1], [BIG, 3], [0, 2]), 1),
    "split_equal": ((6, 3), (N("Split", ["f"], ["g"], axis=1, num_outputs=3), {}), 3),
    "split_sizes": ((4, 7), (N("Split", ["f", "sp"], ["g"], axis=-1), {"sp": np.array([2, 5], I64)}), 2),
    "gather_scalar": ((5, 4), (N("Gather", ["f", "i"], ["g"], axis=1), {"i": np.array(-2, I64)}), 1),
    "gather_matrix": ((3, 5), (N("Gather", ["f", "i"], ["g"], axis=2),
                               {"i": np.array([[4, 0], [1, 1], [-1, 2]], I64)}), 1),
    "tile": ((2, 3), (N("Tile", ["f", "r"], ["g"]), {"r": np.array([1, 2, 3], I64)}), 1),
    "expand": ((1, 3, 1), (N("Expand", ["f", "e"], ["g"]), {"e": np.array([4, 1, 5], I64)}), 1),
    "resize_nearest_2x": ((3, 4, 5), resize("asymmetric", "floor", scales=[1, 1, 2, 2]), 1),
    "resize_half_pixel": ((2, 5, 3), resize("half_pixel", "round_prefer_floor", sizes=[1, 2, 8, 7]), 1),
    "resize_down_ceil": ((2, 9, 8), resize("pytorch_half_pixel", "round_prefer_ceil", scales=[1, 1, 0.5, 0.75]), 1),
    "resize_align_corners": ((2, 4, 4), resize("align_corners", "ceil", sizes=[1, 2, 7, 3]), 1),
    "resize_tf_half_pixel": ((1, 3, 5), resize("tf_half_pixel_for_nn", "floor", scales=[1, 1, 3, 1.5]), 1),
    "space_to_depth": ((3, 4, 6), (N("SpaceToDepth", ["f"], ["g"], blocksize=2), {}), 1),
    "depth_to_space_dcr": ((8, 2, 3), (N("DepthToSpace", ["f"], ["g"], blocksize=2, mode="DCR"), {}), 1),
    "depth_to_space_crd": ((8, 2, 3), (N("DepthToSpace", ["f"], ["g"], blocksize=2, mode="CRD"), {}), 1),
}


def run_ort(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("zp", [-128, 127])
def test_movement_equals_onnxruntime_on_every_backend(device, name, zp):  # noqa: F811
    shape, (node, consts), n_out = CASES[name]
    batch = 1 if "sz" in consts else 4  # Resize sizes state the file's batch size
    m = model(shape, node, consts.items(), n_out, zp=zp, batch=batch if batch == 1 else "N")
    g = import_onnx(m.SerializeToString())
    assert {n.op for n in g.nodes} <= {"take", "reshape", "transpose"}
    x = rand_i8(rng_for(len(name), zp), (4, *shape))
    sess = InferenceSession(g, device=device)
    ours = sess.run(None, {"x": x}, output_type="int8")
    theirs = run_ort(m, x[:batch]) if batch == 4 else [np.concatenate(
        [run_ort(m, x[i:i + 1])[k] for i in range(4)]) for k in range(n_out)]
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(sess.run(None, {"x": x[2:3]}, output_type="int8"), ours):  # batch invariance
        np.testing.assert_array_equal(a, b[2:3])


@pytest.mark.parametrize("node,consts", [
    slice_([0], [2], [0]),
    (N("Gather", ["f", "i"], ["g"]), {"i": np.array([0], I64)}),
    (N("Tile", ["f", "r"], ["g"]), {"r": np.array([2, 1, 1], I64)}),
    (N("Split", ["f"], ["g"], num_outputs=1), {}),
    resize("asymmetric", "floor", scales=[2, 1, 1]),
])
def test_batch_axis_is_refused(node, consts):
    with pytest.raises(UnsupportedOpError, match=r"axis 0, the batch"):
        import_onnx(model((3, 4), node, consts.items()))


def test_resize_cubic_is_refused_with_advice():
    node = N("Resize", ["f", "", "sc"], ["g"], mode="cubic")
    with pytest.raises(UnsupportedOpError, match=r"\(op Resize\).*nearest.*linear"):
        import_onnx(model((3, 4), node, {"sc": np.array([1, 1, 2], F32)}.items()))
