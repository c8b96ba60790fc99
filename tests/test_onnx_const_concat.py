"""Importer: Concat with a constant operand broadcast over the batch (a ViT's class token;
synapse_gpu/onnx/const_concat.py), in both formats.

Independent computation: onnxruntime runs the same file (QLinearConcat, or a float Concat
between DequantizeLinear/QuantizeLinear): the constant's rows bit for bit, the activations'
within the concat rule's documented step (docs/ops_rules.md). Every backend, zero points
at both ends, per sample: the constant is repeated, never a sample of its own.
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

N = helper.make_node
F32 = np.float32
SHAPE = (4, 40)  # (tokens, features) per sample; the constant is one more token


def concat_model(fmt, zp, const, axis=1, const_first=True):
    """x (1, 4, 40) int8 and a (1, 1, 40) int8 constant with its own scale, concatenated."""
    inits = {"xs": F32(0.05), "xz": np.int8(zp), "cs": F32(0.03), "cz": np.int8(-zp // 3),
             "ys": F32(0.06), "yz": np.int8(zp // 2), "c": const}
    if fmt == "QOperator":
        ins = [["c", "cs", "cz"], ["x", "xs", "xz"]]
        ins = ins if const_first else ins[::-1]
        nodes = [N("QLinearConcat", ["ys", "yz", *ins[0], *ins[1]], ["y"], domain="com.microsoft",
                   axis=axis)]
    else:
        ins = ["dc", "dx"] if const_first else ["dx", "dc"]
        nodes = [N("DequantizeLinear", ["x", "xs", "xz"], ["dx"]),
                 N("DequantizeLinear", ["c", "cs", "cz"], ["dc"]),
                 N("Concat", ins, ["f"], axis=axis), N("QuantizeLinear", ["f", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "cat", [helper.make_tensor_value_info("x", TensorProto.INT8,
                                                                       [1, *SHAPE])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("com.microsoft", 1)],
                             ir_version=9)


@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
@pytest.mark.parametrize("zp", [-128, 127])
@pytest.mark.parametrize("const_first", [True, False])
def test_constant_concat_operand_equals_onnxruntime(device, fmt, zp, const_first):  # noqa: F811
    rng = rng_for(len(fmt), zp, const_first)
    m = concat_model(fmt, zp, rand_i8(rng, (1, 1, SHAPE[1])), const_first=const_first)
    g = import_onnx(m.SerializeToString())
    assert "constant" in [n.op for n in g.nodes]
    x = rand_i8(rng, (3, *SHAPE))
    try:
        sess = InferenceSession(g, device=device)
    except UnsupportedOpError as e:  # tokens.py's `constant` op: CPU only so far
        if "has no CUDA kernel" not in str(e):
            raise
        pytest.skip(str(e))
    ours = sess.run(None, {"x": x}, output_type="int8")[0]
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = np.concatenate([ref.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    d = np.abs(ours.astype(int) - theirs)
    row = 0 if const_first else SHAPE[0]
    assert d[:, row].max() == 0  # the constant's codes: onnxruntime's table, exactly
    assert d.max() <= 1 and (d == 0).mean() > 0.95  # the activations: the concat rule's bound
    np.testing.assert_array_equal(ours[:, row], np.broadcast_to(ours[0, row], ours[:, row].shape))
    assert len(np.unique(ours[0, row])) > 8  # the constant's codes, requantized, not a clamp
    for i in (0, 2):  # batch invariance
        np.testing.assert_array_equal(sess.run(None, {"x": x[i:i + 1]}, output_type="int8")[0],
                                      ours[i:i + 1])


@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
def test_a_constant_varying_along_the_batch_is_refused(fmt):
    m = concat_model(fmt, 0, rand_i8(rng_for(3), (2, 1, SHAPE[1])))
    with pytest.raises(UnsupportedOpError, match=r"\(op (QLinear)?Concat\).*varies along axis 0"):
        import_onnx(m.SerializeToString())


def test_a_float_constant_operand_is_refused():
    m = concat_model("QDQ", 0, rand_i8(rng_for(4), (1, 1, SHAPE[1])))
    dq = m.graph.node[1]
    m.graph.node.remove(dq)  # the Concat now reads the raw constant: float, unquantized
    m.graph.node[1].input[:] = ["cf", "dx"]
    m.graph.initializer.append(numpy_helper.from_array(np.ones((1, 1, SHAPE[1]), F32), "cf"))
    with pytest.raises(UnsupportedOpError, match=r"\(op Concat\): a concat operand is a "
                                                 r"constant.*int8 tensor quantized per tensor"):
        import_onnx(m.SerializeToString())
