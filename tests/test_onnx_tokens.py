"""Token models from ONNX: an int64 input of token ids read by Gather on a quantized
embedding table (synapse_gpu/onnx/tokens.py), constant operands of any shape
(onnx/attention.py), and the quantized 2-layer transformer text classifier of
examples/text_transformer.py (onnx.helper + quantize_static, no torch) end to end.

Agreement with onnxruntime on the classifier, measured on this AVX2 machine (no VNNI)
over 300 random sequences (examples/text_transformer.py): 59% of the int8 logits
identical, at most 6 steps apart, top-1 99.7% equal (200-sequence sets: 50-60%, 3-6
steps, 99-100%). Both are equally close to the float model (top-1 99.0% vs onnxruntime's
98.3%, mean distance 2.01 vs 2.03 steps). The first node that differs with
identical inputs is a QLinearMatMul (onnxruntime's u8s8 kernel saturating its int16 pair
sums, tests/ort_helpers.py:ort_u8s8_exact); layernorm and softmax rules add single steps.
The floors below leave room for a machine where onnxruntime's kernels differ; a wrong
scale, zero point, layout or id would drop far below them."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import InputError, OnnxImportError, UnsupportedOpError
from synapse_gpu.onnx.importer import import_onnx

from token_models import example, quantized_transformer

MIN_IDENTICAL, MAX_STEPS, MIN_TOP1 = 0.40, 8, 0.97  # measured: 0.50-0.60, 3-6, 0.99-1.0


def gather_model(table, axis=0, table_scale=None, consumer="Gather"):
    """tokens (N, 5) int64 -> Gather(table) -> Q -> DQ -> output; table float, or int8
    behind a DequantizeLinear when table_scale is given."""
    inits = [numpy_helper.from_array(table, "table")]
    nodes = []
    data = "table"
    if table_scale is not None:
        inits += [numpy_helper.from_array(np.array(table_scale, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes.append(helper.make_node("DequantizeLinear", ["table", "s", "z"], ["table_f"]))
        data = "table_f"
    if consumer == "Gather":
        nodes.append(helper.make_node("Gather", [data, "tokens"], ["e"], axis=axis))
    else:  # the ids read by another op
        nodes.append(helper.make_node("Cast", ["tokens"], ["e"], to=TensorProto.FLOAT))
    inits += [numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
              numpy_helper.from_array(np.array(0, np.int8), "yz")]
    nodes += [helper.make_node("QuantizeLinear", ["e", "ys", "yz"], ["q"]),
              helper.make_node("DequantizeLinear", ["q", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "gather", [helper.make_tensor_value_info(
        "tokens", TensorProto.INT64, ["N", 5])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_quantized_gather_is_an_embedding_equal_to_onnxruntime():
    table = np.random.default_rng(0).integers(-128, 128, (40, 6)).astype(np.int8)
    table[0, 0], table[-1, -1] = -128, 127
    model = gather_model(table, table_scale=0.05)
    g = import_onnx(model)
    assert [n.op for n in g.nodes] == ["embedding"] and g.inputs[0].dtype == "int64"
    ids = np.random.default_rng(1).integers(0, 40, (7, 5))
    ids[0, 0], ids[-1, -1] = 0, 39
    ours = InferenceSession(g, device="cpu").run(None, {"tokens": ids}, output_type="int8")[0]
    theirs = ort.InferenceSession(model.SerializeToString(), providers=[
        "CPUExecutionProvider"]).run(None, {"tokens": ids})[0]
    np.testing.assert_array_equal(ours.astype(np.float32) * np.float32(0.05), theirs)


def test_qoperator_gather_reads_the_raw_table():
    """QOperator: Gather on the uint8 codes, the reader (here a DequantizeLinear) states
    their scale and zero point; codes shifted to int8, the same real values."""
    table = np.random.default_rng(3).integers(0, 256, (30, 4)).astype(np.uint8)
    table[0, 0], table[-1, -1] = 0, 255
    nodes = [helper.make_node("Gather", ["table", "tokens"], ["e"]),
             helper.make_node("DequantizeLinear", ["e", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(np.array(0.04, np.float32), "s"),
             numpy_helper.from_array(np.array(131, np.uint8), "z")]
    g = helper.make_graph(nodes, "qop", [helper.make_tensor_value_info(
        "tokens", TensorProto.INT64, ["N", 5])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ids = np.random.default_rng(4).integers(0, 30, (3, 5))
    ids[0, 0], ids[-1, -1] = 0, 29
    ours = InferenceSession(model, device="cpu").run(None, {"tokens": ids})[0]
    theirs = ort.InferenceSession(model.SerializeToString(), providers=[
        "CPUExecutionProvider"]).run(None, {"tokens": ids})[0]
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(), UnsupportedOpError, "a float embedding table has no int8 form"),
    (dict(raw_int8=True), OnnxImportError, "'e': no node states its scale and zero point"),
    (dict(table_scale=0.05, axis=1), UnsupportedOpError, "axis other than 0"),
    (dict(table_scale=0.05, consumer="Cast"), OnnxImportError,
     "token-id graph input 'tokens' is read by node .* \\(op Cast\\)"),
])
def test_token_refusals(kw, exc, match):
    rng = np.random.default_rng(2)
    quantized = "table_scale" in kw or kw.pop("raw_int8", False)
    table = (rng.integers(-128, 128, (6, 5)).astype(np.int8) if quantized else
             rng.standard_normal((6, 5)).astype(np.float32))
    with pytest.raises(exc, match=match):
        import_onnx(gather_model(table, **kw))


@pytest.fixture(scope="module")
def classifier():
    return quantized_transformer()


def test_classifier_lowers_to_integer_ops(classifier):
    ops = {n.op for n in import_onnx(classifier).nodes}
    assert {"embedding", "constant", "dense", "matmul", "softmax", "layernorm", "lut", "add",
            "mul", "avg_pool"} <= ops


def test_classifier_agrees_with_onnxruntime(classifier):
    tt = example()
    same, worst, top1 = tt.agreement(classifier, samples=200, seed=11)
    print(f"\nAGREEMENT text_transformer: logits identical {same:.4f}, max {worst} steps, "
          f"top-1 {top1:.3f}")
    assert same >= MIN_IDENTICAL and worst <= MAX_STEPS and top1 >= MIN_TOP1


def test_classifier_batch_invariance_and_bad_ids(classifier):
    sess = InferenceSession(classifier, device="cpu")
    ids = example().random_tokens(np.random.default_rng(5), 6)
    y = sess.run(None, {"tokens": ids}, output_type="int8")[0]
    for i in range(6):
        np.testing.assert_array_equal(sess.run(None, {"tokens": ids[i:i + 1]},
                                               output_type="int8")[0], y[i:i + 1])
    ids[2, 7] = 1000
    with pytest.raises(InputError, match=r"token id 1000 at index \[2, 7\] is outside the "
                                         r"vocabulary \[0, 1000\)"):
        sess.run(None, {"tokens": ids})


def test_requantized_constant_operand():
    """QuantizeLinear of a dequantized constant (torch shares a weight through Identity and
    quantize_static quantizes it again) folds to Q(DQ(q)) in float32, as onnxruntime does."""
    rng = np.random.default_rng(9)
    q = rng.integers(-128, 128, (5,)).astype(np.int8)
    s1, s2, z2 = np.float32(0.03), np.float32(0.047), np.int8(-7)
    c = lambda a, n: numpy_helper.from_array(np.asarray(a), n)  # noqa: E731
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "s1", "z1"], ["wd"]),
             helper.make_node("QuantizeLinear", ["wd", "s2", "z2"], ["wq"]),
             helper.make_node("DequantizeLinear", ["wq", "s2", "z2"], ["wdd"]),
             helper.make_node("Add", ["xd", "wdd"], ["a"]),
             helper.make_node("QuantizeLinear", ["a", "ys", "z1"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "ys", "z1"], ["y"])]
    inits = [c(q, "w"), c(s1, "s1"), c(np.int8(0), "z1"), c(s2, "s2"), c(z2, "z2"),
             c(np.float32(0.02), "xs"), c(np.int8(3), "xz"), c(np.float32(0.05), "ys")]
    g = helper.make_graph(nodes, "rq", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      ["N", 4, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    graph = import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                          ir_version=8))
    (const,) = [n for n in graph.nodes if n.op == "constant"]
    want = np.clip(np.rint((q.astype(np.float32) * s1) / s2) + z2, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(graph.param(const, "value").reshape(-1), want)
    assert graph.quant[const.outputs[0]] == (float(s2), int(z2))


def test_torch_built_classifier(tmp_path):
    """The same classifier written in torch and exported by torch.onnx (skipped without torch,
    which is no test dependency). onnxruntime's optimized run saturates u8s8 sums on these
    weights (4% identical, top-1 89.7% on AVX2), so the exact comparison is with its
    unoptimized run (measured on 3 x 100 sequences: 30-33% identical, max 4, top-1 97-100%);
    fidelity to the float model as onnxruntime's own float path (measured: top-1 96% vs
    97%, mean distance 1.39 vs 1.40 steps)."""
    pytest.importorskip("torch")
    tt = example()
    model = tt.torch_model()
    path = tt.quantize(model, str(tmp_path / "torch_qdq.onnx"))
    assert {"embedding", "constant", "matmul", "softmax", "layernorm"} <= {
        n.op for n in import_onnx(path).nodes}
    same, worst, top1 = tt.agreement(path, samples=100, seed=11, optimized=False)
    assert same >= 0.2 and worst <= 6 and top1 >= 0.95
    fid = tt.float_fidelity(model, path, samples=100)
    (s_top1, s_dist), (o_top1, o_dist) = fid["synapse"], fid["onnxruntime unoptimized"]
    assert s_top1 >= o_top1 - 0.05 and s_dist <= 1.5 * o_dist
