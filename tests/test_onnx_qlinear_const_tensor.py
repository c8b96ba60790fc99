"""Importer: QLinearAdd/QLinearMul with a constant tensor operand (a ViT's positional
embedding; a scalar; a last-axis constant; qoperator.py _constant_tensor): a `constant`
node and the two-tensor rule.

Independent computation: onnxruntime runs the same QOperator file; zero tolerance,
zero points at both ends, per sample; the constant on either side.
"""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import ModelFormatError, UnsupportedOpError
from synapse_gpu.onnx.importer import import_onnx

from ort_helpers import rand_i8, rng_for

SHAPE = (5, 12)


def model(op, zp, const, const_first, scales=(0.04, 0.03, 0.05)):
    xs, cs, ys = (np.float32(v) for v in scales)
    inits = {"xs": xs, "xz": np.int8(zp), "c": const, "cs": cs,
             "cz": np.int8(-zp // 2), "ys": ys, "yz": np.int8(zp // 3)}
    ins = [["x", "xs", "xz"], ["c", "cs", "cz"]]
    ins = ins[::-1] if const_first else ins
    g = helper.make_graph([helper.make_node(op, [*ins[0], *ins[1], "ys", "yz"], ["y"],
                                            domain="com.microsoft")], "cadd",
                          [helper.make_tensor_value_info("x", TensorProto.INT8, [1, *SHAPE])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("com.microsoft", 1)],
                             ir_version=9)


def ort_per_sample(m, x):
    """onnxruntime's output, one sample at a time (the file declares batch 1)."""
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([ref.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("zp", [-128, 127])
# a scalar and a last-axis constant too: the two-tensor rule is onnxruntime's (the
# per-channel affine rule, kept for axis 1, rounds once more)
@pytest.mark.parametrize("const_first,cshape", [(False, (1, *SHAPE)), (True, SHAPE), (False, ()),
                                                (True, (SHAPE[-1],)), (False, (1, 1, SHAPE[-1]))])
def test_constant_tensor_operand_equals_onnxruntime(op, zp, const_first, cshape):
    rng = rng_for(len(op), zp, const_first, cshape)
    m = model(op, zp, rand_i8(rng, cshape), const_first)
    g = import_onnx(m.SerializeToString())
    assert [n.op for n in g.nodes] == ["constant", "add" if op == "QLinearAdd" else "mul"]
    x = rand_i8(rng, (3, *SHAPE))
    sess = InferenceSession(g, device="cpu")  # `constant` has no CUDA kernel yet (tokens.py)
    ours = sess.run(None, {"x": x}, output_type="int8")[0]
    np.testing.assert_array_equal(ours, ort_per_sample(m, x))
    assert len(np.unique(ours)) > 16
    np.testing.assert_array_equal(sess.run(None, {"x": x[1:2]}, output_type="int8")[0],
                                  ours[1:2])


@pytest.mark.parametrize("cshape", [(), (SHAPE[-1],)])
@pytest.mark.parametrize("zp", [-128, 127])
def test_scalar_and_last_axis_constants_round_as_onnxruntime(zp, cshape):
    """Scales drawn at random: the per-channel affine rule this case once took (one
    rounding more) missed onnxruntime's QLinearAdd on some of them."""
    rng = rng_for(zp, cshape)
    for _ in range(6):
        m = model("QLinearAdd", zp, rand_i8(rng, cshape), False, rng.uniform(0.001, 0.1, 3))
        x = rand_i8(rng, (8, *SHAPE))
        ours = InferenceSession(import_onnx(m.SerializeToString()), device="cpu").run(
            None, {"x": x}, output_type="int8")[0]
        np.testing.assert_array_equal(ours, ort_per_sample(m, x))


def test_a_constant_tensor_varying_along_the_batch_is_refused():
    m = model("QLinearAdd", 0, rand_i8(rng_for(1), (2, *SHAPE)), False)
    with pytest.raises(UnsupportedOpError, match=r"\(op QLinearAdd\).*varies along axis 0"):
        import_onnx(m.SerializeToString())


def test_a_constant_tensor_that_does_not_broadcast_is_refused():
    m = model("QLinearAdd", 0, rand_i8(rng_for(2), (1, 7, 12)), False)
    with pytest.raises(ModelFormatError, match=r"\(op QLinearAdd\).*\[1, 7, 12\] does not "
                                               r"broadcast to \[-1, 5, 12\]"):
        import_onnx(m.SerializeToString())
