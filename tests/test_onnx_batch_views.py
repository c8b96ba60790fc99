"""Importer: Reshapes and Transposes that move the batch axis (synapse_gpu/onnx/batch_views.py),
and the channels-last constant operand of Mul/Add.

Independent computation: onnxruntime runs the same QOperator file (int8 activations,
QGemm/QLinearMatMul/QLinearSigmoid, which Synapse reproduces bit for bit), with the batch
merged into rows or moved exactly as the file says; zero tolerance, on every backend,
zero points at both ends, and per sample (batch invariance: a sample's output does not
depend on the others, which is what the view rule proves).
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
F32, I64 = np.float32, np.int64
MS = "com.microsoft"


class Q:
    """A QOperator file under construction: int8 activations named t0, t1, ..."""

    def __init__(self, seed, zp):
        self.rng, self.zp, self.nodes, self.inits, self.k = rng_for(seed, zp), zp, [], {}, 0

    def const(self, v):
        name = f"c{len(self.inits)}"
        self.inits[name] = np.asarray(v)
        return name

    def q(self, scale, zp):
        return [self.const(F32(scale)), self.const(np.int8(zp))]

    def node(self, op, ins, domain="", **attrs):
        self.k += 1
        self.nodes.append(N(op, ins, [f"t{self.k}"], domain=domain or None, name=f"{op}{self.k}",
                            **attrs))
        return f"t{self.k}"

    def reshape(self, x, target):
        return self.node("Reshape", [x, self.const(np.array(target, I64))])

    def transpose(self, x, perm):
        return self.node("Transpose", [x], perm=perm)

    def qgemm(self, x, xq, k, m, yq):
        w = rand_i8(self.rng, (m, k))
        ws = self.rng.uniform(0.002, 0.01, m).astype(F32)
        bias = self.rng.integers(-3000, 3000, m).astype(np.int32)
        return self.node("QGemm", [x, *xq, self.const(w), self.const(ws),
                                   self.const(np.zeros(m, np.int8)), self.const(bias), *yq],
                         MS, transB=1)

    def matmul(self, x, xq, k, m, yq):
        w = rand_i8(self.rng, (k, m))
        return self.node("QLinearMatMul", [x, *xq, self.const(w), *self.q(0.006, 0), *yq])

    def model(self, shape, y):
        g = helper.make_graph(
            self.nodes, "views", [helper.make_tensor_value_info("x", TensorProto.INT8, shape)],
            [helper.make_tensor_value_info(y, TensorProto.INT8, None)],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(MS, 1)], ir_version=9)


def rows_gemm(b, zp):
    """A Linear on (N, 4, 5, 6) the way onnxruntime's optimizer writes it: rows, QGemm, back."""
    m = Q(1, zp)
    xq, yq = m.q(0.05, zp), m.q(0.08, -zp // 2)
    y = m.qgemm(m.reshape("x", [b * 20 if b else -1, 6]), xq, 6, 7, yq)
    return m.model([b or "N", 4, 5, 6], m.reshape(y, [b or -1, 4, 5, 7])), (4, 5, 6)


def rows_refactored(b, zp):
    """Rows of another factorisation (each sample of (6, 10) as 12 rows of 5), a
    QLinearMatMul, a LUT activation, and a Reshape to (N, 108): whole rows per sample."""
    m = Q(2, zp)
    xq, yq, sq = m.q(0.04, zp), m.q(0.1, zp), m.q(1 / 256, -128)
    y = m.matmul(m.reshape("x", [b * 12, 5]), xq, 5, 9, yq)
    y = m.node("QLinearSigmoid", [y, *yq, *sq], MS)
    return m.model([b, 6, 10], m.reshape(y, [b, 108])), (6, 10)


def moved_sequence(b, zp):
    """A CRNN's (N, C, W) -> (W, N, C), a per-step dense, and back to (N, C', W)."""
    m = Q(3, zp)
    xq, yq = m.q(0.05, zp), m.q(0.09, zp)
    y = m.matmul(m.transpose("x", [2, 0, 1]), xq, 6, 5, yq)
    return m.model([b or "N", 6, 7], m.transpose(y, [1, 2, 0])), (6, 7)


def moved_twice(b, zp):
    """The batch moved to axis 1, moved again (still axis 1), then brought back."""
    m = Q(4, zp)
    xq, yq = m.q(0.05, zp), m.q(0.07, 3)
    y = m.matmul(m.transpose("x", [1, 0, 2, 3]), xq, 5, 6, yq)
    y = m.node("Relu", [m.transpose(y, [2, 1, 0, 3])])
    return m.model([b or "N", 3, 4, 5], m.transpose(y, [1, 0, 2, 3])), (3, 4, 5)


CASES = {"rows_gemm_static": (rows_gemm, 1), "rows_gemm_dynamic": (rows_gemm, 0),
         "rows_refactored": (rows_refactored, 1), "moved_sequence": (moved_sequence, 0),
         "moved_twice": (moved_twice, 2)}


def run_ort(m, x, batch):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    step = batch or len(x)
    return np.concatenate([sess.run(None, {"x": x[i:i + step]})[0]
                           for i in range(0, len(x), step)])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("zp", [-128, 127])
def test_batch_view_equals_onnxruntime_on_every_backend(device, name, zp):  # noqa: F811
    make, b = CASES[name]
    model, shape = make(b, zp)
    g = import_onnx(model.SerializeToString())
    x = rand_i8(rng_for(len(name), zp), (4, *shape))
    sess = InferenceSession(g, device=device)
    ours = sess.run(None, {"x": x}, output_type="int8")[0]
    theirs = run_ort(model, x, b)
    np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(ours)) > 8  # the data exercises the range, not one clamp
    for i in (0, 3):  # batch invariance
        np.testing.assert_array_equal(sess.run(None, {"x": x[i:i + 1]}, output_type="int8")[0],
                                      ours[i:i + 1])


def _refused(build_fn, shape, match):
    m = Q(5, 0)
    q = m.q(0.05, 0)
    y = m.node("QLinearSigmoid", [build_fn(m, q), *q, *q], MS)  # states x's scale
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(m.model(shape, y).SerializeToString())


def test_a_view_read_by_a_non_row_op_names_the_node():
    _refused(lambda m, q: m.reshape(m.node("QLinearGlobalAveragePool",
                                           [m.reshape("x", [12, 5, 1]), *q, *q], MS), [1, 12]),
             [1, 6, 10], r"'QLinearGlobalAveragePool2' \(op QLinearGlobalAveragePool\): reads "
                         r"a tensor whose axis 0 merges the batch with 12 rows.*'Reshape1' "
                         r"\(op Reshape\).*only row-wise ops")


def test_a_view_as_graph_output_is_refused():
    _refused(lambda m, q: m.transpose("x", [1, 0, 2]), [1, 6, 10],
             r"'QLinearSigmoid2' \(op QLinearSigmoid\): graph output 't2' would be a tensor "
             r"whose batch is axis 1")


@pytest.mark.parametrize("target,why", [
    ([7, 5], "whole rows|not batch 1"), ([4, 7], "whole rows"),
    ([24, 5], "24 rows are not batch 1 x 12")])
def test_rows_that_split_a_sample_are_refused(target, why):
    _refused(lambda m, q: m.reshape(m.reshape("x", target), [1, 60]), [1, 6, 10],
             rf"'Reshape1' \(op Reshape\): target shape .* does not keep axis 0 .*({why})")


def test_rows_need_a_static_batch():
    _refused(lambda m, q: m.reshape(m.reshape("x", [12, 5]), [-1, 60]), ["N", 6, 10],
             r"'Reshape1'.*no single static batch size")


def test_a_dense_over_the_moved_batch_is_refused():
    _refused(lambda m, q: m.transpose(m.matmul(m.transpose("x", [1, 2, 0]), q, 1, 3, q),
                                      [2, 0, 1]), [1, 6, 10],
             r"'QLinearMatMul2' \(op QLinearMatMul\): its reduction axis \(the last\) is the batch")


def test_two_activations_next_to_a_view_are_refused():
    _refused(lambda m, q: m.node("QLinearAdd", [m.reshape("x", [12, 5]), *q,
                                                m.reshape("x", [12, 5]), *q, *q], MS),
             [1, 6, 10], r"'QLinearAdd3'.*next to another activation")


@pytest.mark.parametrize("first,then,match", [
    ("rows", "transpose", "reshape the rows back"), ("moved", "reshape", "transpose the batch")])
def test_mixing_the_two_views_is_refused(first, then, match):
    def build(m, q):
        y = m.reshape("x", [12, 5]) if first == "rows" else m.transpose("x", [1, 0, 2])
        return m.transpose(y, [1, 0]) if then == "transpose" else m.reshape(y, [6, 10])
    _refused(build, [1, 6, 10], match)


@pytest.mark.parametrize("op", ["QLinearMul", "QLinearAdd"])
@pytest.mark.parametrize("zp", [-128, 127])
def test_channels_last_constant_is_onnxruntimes_rule(op, zp):
    """A constant (1, 1, 1, C) on (N, H, W, C) (ConvNeXt's layer scale after onnxruntime's
    optimizer moved a Transpose past it): a `constant` node and the two-tensor rule, exactly
    onnxruntime's; the transposed file's axis-1 affine rule within its bound of 1 step."""
    shape = (5, 6, 9)
    c = rand_i8(rng_for(7, zp), (shape[-1],))

    def file(channels_last):
        m = Q(6, zp)
        x = "x" if channels_last else m.transpose("x", [0, 3, 1, 2])
        k = m.const(c.reshape((1, 1, 1, -1) if channels_last else (-1, 1, 1)))
        y = m.node(op, [x, *m.q(0.05, zp), k, *m.q(0.01, 0), *m.q(0.06, 1)], MS)
        return m.model(["N", *shape], y if channels_last else m.transpose(y, [0, 2, 3, 1]))
    x = rand_i8(rng_for(8, zp), (3, *shape))
    g = import_onnx(file(True).SerializeToString())
    assert [n.op for n in g.nodes] == ["constant", op[len("QLinear"):].lower()]
    a, b = (InferenceSession(gi).run(None, {"x": x}, output_type="int8")[0]
            for gi in (g, import_onnx(file(False).SerializeToString())))
    np.testing.assert_array_equal(a, run_ort(file(True), x, 0))
    assert np.abs(a.astype(int) - b).max() <= 1  # the axis-1 rule's bound (docs)


def rows_softmax(b, zp, merge=True):
    """Each sample of (6, 10) as 12 rows of 5, a softmax per row, back to (N, 60); with
    merge=False the same computation with the batch kept: (N, 12, 5)."""
    m = Q(7, zp)
    xq, sq = m.q(0.04, zp), m.q(1 / 256, -128)
    y = m.reshape("x", [b * 12 if merge else b, *([5] if merge else [12, 5])])
    y = m.node("QLinearSoftmax", [y, *xq, *sq], MS, axis=-1, opset=13)
    return m.model([b, 6, 10], m.reshape(y, [b, 60]))


@pytest.mark.parametrize("zp", [-128, 127])
def test_softmax_over_rows_is_the_batch_kept_softmax(device, zp):  # noqa: F811
    x = rand_i8(rng_for(11, zp), (4, 6, 10))
    ours, kept = (InferenceSession(import_onnx(rows_softmax(1, zp, merge).SerializeToString()),
                                   device=device).run(None, {"x": x}, output_type="int8")[0]
                  for merge in (True, False))
    np.testing.assert_array_equal(ours, kept)
    theirs = run_ort(rows_softmax(1, zp), x, 1)  # the softmax rule: within 1 step (docs)
    assert np.abs(ours.astype(int) - theirs).max() <= 1 and (ours == theirs).mean() > 0.99


def test_a_softmax_over_a_positive_axis_of_rows_is_refused():
    _refused(lambda m, q: m.reshape(m.node("QLinearSoftmax", [m.reshape("x", [12, 5]), *q, *q],
                                           MS, axis=1, opset=13), [1, 60]), [1, 6, 10],
             r"'QLinearSoftmax2'.*over an axis given as other than -1")
