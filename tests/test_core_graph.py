"""The core's algorithms on plain graph data: order, shapes, buffer plan, limits, bounds."""
import numpy as np
import pytest

from synapse_gpu import build, errors
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.graph import Graph, GraphBuilder, Node, TensorSpec
from synapse_gpu.plan import topological_order
from synapse_gpu.validate import validate


def _chain(n_layers, channels=4, size=8, w_value=None, k=3):
    b = GraphBuilder()
    h = b.add_input("x", (-1, channels, size, size), 0.02, 0)
    rng = np.random.default_rng(0)
    for i in range(n_layers):
        w = (rng.integers(-127, 128, (channels, channels, k, k)) if w_value is None
             else np.full((channels, channels, k, k), w_value)).astype(np.int8)
        h = build.conv(b, h, w, 0.003, None, y_scale=0.05, y_zero_point=0, pads="same_upper")
    b.add_output(h)
    return b.build()


def test_topological_order_sorts_shuffled_nodes():
    g = tiny_cnn()
    shuffled = Graph(g.inputs, g.outputs, list(reversed(g.nodes)), g.buffers, g.quant)
    order = topological_order(shuffled)
    seen = {t.name for t in g.inputs}
    for n in order:
        assert all(i in seen for i in n.inputs), n.name
        seen.update(n.outputs)
    assert [n.name for n in order] == [n.name for n in topological_order(g)]


def _two_node_graph(n1_inputs, n2_inputs, n1_out="a", n2_out="b", out="b"):
    nodes = [Node("n1", "relu", n1_inputs, [n1_out], {"x_zero_point": 0}),
             Node("n2", "relu", n2_inputs, [n2_out], {"x_zero_point": 0})]
    return Graph([TensorSpec("x", (-1, 4), 0.1, 0)], [TensorSpec(out, (-1, 4), 0.1, 0)], nodes, {})


@pytest.mark.parametrize("graph, message", [
    (_two_node_graph(["b"], ["a"]), "cycle"),
    (_two_node_graph(["x"], ["x"], n2_out="a", out="a"), "produced twice"),
    (_two_node_graph(["x"], ["missing"]), "nothing produces"),
    (_two_node_graph(["x"], ["a"], out="nowhere"), "not produced"),
])
def test_structural_errors(graph, message):
    with pytest.raises(errors.ModelFormatError, match=message):
        topological_order(graph)


def test_shapes_and_plan_reuse_slots_without_overlap():
    g = tiny_cnn()
    rep = validate(g)
    tr = rep.traversal
    assert tr.shapes["logits"] == (-1, 10)
    assert tr.shapes["maxpool"] == (-1, 8, 4, 4)
    assert tr.shapes["grouped"] == (-1, 16, 4, 4)
    # live ranges of tensors sharing a slot never overlap
    born, last = {t.name: -1 for t in g.inputs}, {}
    for i, n in enumerate(tr.order):
        for t in n.inputs:
            last[t] = i
        for t in n.outputs:
            born[t] = i
    for t in g.outputs:
        last[t.name] = len(tr.order)
    for a in born:
        for c in born:
            if a < c and tr.slot_of[a] == tr.slot_of[c]:
                assert last.get(a, born[a]) < born[c] or last.get(c, born[c]) < born[a], (a, c)
    assert len(tr.slot_elems) < len(born)  # something was reused
    for t, s in tr.slot_of.items():
        assert tr.slot_elems[s] >= tr.sample_elems(t)


def test_bad_param_dtype_and_shape_rejected():
    b = GraphBuilder()
    x = b.add_input("x", (-1, 3, 8, 8), 0.02, 0)
    with pytest.raises(errors.DtypeError, match="param w has dtype int32"):
        b.add_node("conv2d", [x], attrs=dict(x_zero_point=0, y_zero_point=0, strides=[1, 1],
                                              pads=[0, 0, 0, 0], dilations=[1, 1], group=1),
                   params=dict(w=np.ones((4, 3, 3, 3), np.int32), bias=np.zeros(4, np.int32),
                               multiplier=np.ones(4, np.int64), shift=np.ones(4, np.int64),
                               w_zero_point=np.zeros(4, np.int32)))
    with pytest.raises(errors.ShapeError, match="input channels 3"):
        build.conv(b, x, np.ones((4, 5, 3, 3), np.int8), 0.01, y_scale=0.1, y_zero_point=0)
    with pytest.raises(errors.UnsupportedOpError, match="not a Synapse op"):
        b.add_node("softplus", [x])


def test_depth_limit():
    g = _chain(201, channels=1, size=4, k=1)
    with pytest.raises(errors.DepthLimitError, match="201 layers"):
        validate(g)
    rep = validate(g, strict=False)
    assert rep.violations and rep.violations[0][0] == "DepthLimitError"
    assert rep.depth == 201
    assert validate(_chain(200, channels=1, size=4, k=1)).depth == 200


def test_channel_limit():
    b = GraphBuilder()
    x = b.add_input("x", (-1, 8, 2, 2), 0.02, 0)
    h = build.conv(b, x, np.ones((4097, 8, 1, 1), np.int8), 0.01, y_scale=0.1, y_zero_point=0)
    b.add_output(h)
    with pytest.raises(errors.ChannelLimitError, match="4097 channels > limit 4096"):
        validate(b.build())


def test_input_size_limit():
    b = GraphBuilder()
    x = b.add_input("x", (-1, 3, 225, 224), 0.02, 0)
    b.add_output(build.relu(b, x))
    with pytest.raises(errors.InputSizeLimitError, match="151200 elements"):
        validate(b.build())
    b = GraphBuilder()
    b.add_output(build.relu(b, b.add_input("x", (-1, 3, 224, 224), 0.02, 0)))
    assert validate(b.build()).within_limits


def test_kernel_size_limit():
    b = GraphBuilder()
    x = b.add_input("x", (-1, 4096, 4, 4), 0.02, 0)
    b.add_output(build.conv(b, x, np.ones((2, 4096, 4, 4), np.int8), 0.01, y_scale=1.0,
                            y_zero_point=0))
    with pytest.raises(errors.KernelSizeLimitError, match="65536"):
        validate(b.build())


def test_overflow_bound_names_channel_even_when_not_strict():
    # 255 * 127 * K + |bias| >= 2^31 for K = 66400 terms: channel 1 has the big bias
    b = GraphBuilder()
    x = b.add_input("x", (-1, 16, 1, 1), 0.02, -128)
    w = np.full((2, 16, 1, 1), 127, np.int8)
    bias = np.array([0, 2**31 - 1000], np.int32)
    b.add_output(build.conv(b, x, w, 0.01, bias, y_scale=1.0, y_zero_point=0, name="big"))
    with pytest.raises(errors.OverflowRiskError, match=r"'big' \(op conv2d\), output channel 1"):
        validate(b.build(), strict=False)


def test_batch_axis_must_be_kept():
    b = GraphBuilder()
    x = b.add_input("x", (-1, 4, 2, 2), 0.02, 0)
    with pytest.raises(errors.ShapeError, match="batch"):
        b.add_node("transpose", [x], attrs=dict(perm=[1, 0, 2, 3]))
    with pytest.raises(errors.UnsupportedOpError, match="flatten axis 2"):
        b.add_node("flatten", [x], attrs=dict(axis=2))
