"""backends/cpu_fused.py: stretches of the traversal run as one onnxruntime graph give the
reference's bits, node by node and whole models, at several batch sizes; fused and
per-node execution agree; the float path takes over when no integer engine is admitted."""
import os

import numpy as np
import pytest

import synapse_gpu as sg
from synapse_gpu import build, registry
from synapse_gpu.backends import cpu, cpu_engines, cpu_fused
from synapse_gpu.graph import GraphBuilder
from synapse_gpu.validate import validate

EXAMPLES = os.path.join(os.path.dirname(sg.__file__), "examples")


def _rand(seed):
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.integers(-128, 128, shape).astype(np.int8)

    def s(n, lo=0.002, hi=0.01):
        return rng.uniform(lo, hi, n).astype(np.float32)

    def bias(n):
        return rng.integers(-3000, 3000, n).astype(np.int32)
    return rng, w, s, bias


def resnet_block(seed=1):
    """Stem conv (stride 2, ReLU), max pool (3x3, ceil mode), a bottleneck with a strided
    1x1 shortcut and the residual add, a squeeze-excite style mul by the global average
    (broadcast over H, W), global average pool, flatten, dense. Zero points at both ends."""
    rng, w, s, bias = _rand(seed)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 3, 37, 35), scale=0.02, zero_point=127)
    h = build.conv(b, x, w(40, 3, 5, 5), s(40), bias(40), y_scale=0.4, y_zero_point=-128,
                   strides=[2, 2], pads="same_upper", relu=True, name="stem")
    h = build.max_pool(b, h, [3, 3], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1, name="pool")
    r = build.conv(b, h, w(24, 40, 1, 1), s(24), bias(24), y_scale=0.3, y_zero_point=-128, relu=True,
                   name="reduce")
    r = build.conv(b, r, w(24, 24, 3, 3), s(24), bias(24), y_scale=0.9, y_zero_point=127,
                   strides=[2, 2], pads=[1, 1, 1, 1], name="conv3x3")
    r = build.conv(b, r, w(72, 24, 1, 1), s(72), bias(72), y_scale=0.9, y_zero_point=5, name="expand")
    sc = build.conv(b, h, w(72, 40, 1, 1), s(72), bias(72), y_scale=0.3, y_zero_point=-7,
                    strides=[2, 2], name="shortcut")
    h = build.add(b, r, sc, y_scale=0.35, y_zero_point=-128, relu=True, name="residual")
    g = build.global_avg_pool(b, h, y_scale=0.2, y_zero_point=-100, name="squeeze")
    h = build.mul(b, h, g, y_scale=0.5, y_zero_point=3, name="excite")
    h = build.global_avg_pool(b, h, name="gap")
    h = build.flatten(b, h, name="flat")
    h = build.dense(b, h, w(10, 72), s(10), bias(10), y_scale=3.0, y_zero_point=-9, name="fc")
    b.add_output(h, "y")
    return b.build({"name": "resnet_block"})


def mobile_block(seed=2):
    """Expand 1x1 with a relu6-style clamp, depthwise 3x3, project, residual add; a strided
    dilated depthwise conv with asymmetric pads; average pool with padding (tap counts
    vary); batchnorm, prelu, requantize, relu, clip; transpose and reshape, dense over the
    last axis of a 3-D tensor."""
    rng, w, s, bias = _rand(seed)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 16, 19, 21), scale=0.03, zero_point=-128)
    h = build.conv(b, x, w(48, 16, 1, 1), s(48), bias(48), y_scale=0.1, y_zero_point=-128,
                   qmin=-128, qmax=60, name="expand")
    h = build.conv(b, h, w(48, 1, 3, 3), s(48, 0.01, 0.05), bias(48), y_scale=0.1, y_zero_point=-30,
                   pads=[1, 1, 1, 1], group=48, relu=True, name="depthwise")
    h = build.conv(b, h, w(16, 48, 1, 1), s(16), bias(16), y_scale=0.15, y_zero_point=10, name="project")
    h = build.add(b, x, h, y_scale=0.06, y_zero_point=-2, name="residual")
    h = build.conv(b, h, w(16, 1, 3, 3), s(16, 0.01, 0.05), bias(16), y_scale=0.3, y_zero_point=127,
                   strides=[2, 2], pads=[2, 1, 0, 2], dilations=[2, 2], group=16, name="dw_strided")
    h = build.avg_pool(b, h, [3, 3], strides=[1, 2], pads=[1, 1, 1, 1], ceil_mode=1, y_scale=0.07,
                       y_zero_point=-50, name="avg")
    h = build.batchnorm(b, h, rng.uniform(0.5, 1.5, 16), rng.uniform(-0.2, 0.2, 16),
                        rng.uniform(-0.1, 0.1, 16), rng.uniform(0.5, 2, 16), y_scale=0.05,
                        y_zero_point=0, name="bn")
    h = build.prelu(b, h, rng.uniform(-0.5, 0.5, 16), y_scale=0.05, y_zero_point=-60, name="prelu")
    h = build.requantize(b, h, y_scale=0.04, y_zero_point=20, name="requant")
    h = build.relu(b, h, name="relu")
    h = build.clip(b, h, None, 3.5, name="clip")
    h = build.avg_pool(b, h, [2, 2], strides=[2, 2], count_include_pad=1, y_scale=0.04,
                       y_zero_point=-128, name="avg2")
    h = build.transpose(b, h, [0, 2, 3, 1], name="to_nhwc")
    h = build.reshape(b, h, [int(np.prod(b.shapes[h][1:3])), 16], name="rows")
    h = build.dense(b, h, w(12, 16), s(12), bias(12), y_scale=0.1, y_zero_point=-128, relu=True, name="fc")
    b.add_output(h, "y")
    return b.build({"name": "mobile_block"})


def conv1d_net(seed=3):
    """conv1d, max pool 1-D (dilated), reshape to 2-D, a grouped conv2d: NCHW-only pools
    and the height-1 conv next to channels-last convs."""
    rng, w, s, bias = _rand(seed)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 6, 52), scale=0.02, zero_point=0)
    h = build.conv(b, x, w(8, 6, 5), s(8), bias(8), y_scale=0.3, y_zero_point=-128, strides=[2],
                   pads=[2, 1], name="c1d")
    h = build.max_pool(b, h, [3], strides=[1], pads=[1, 1], dilations=[2], name="pool1d")
    h = build.reshape(b, h, [8, 4, 6], name="to2d")
    h = build.conv(b, h, w(16, 4, 3, 3), s(16), None, y_scale=0.2, y_zero_point=7, pads=[2, 1, 0, 2],
                   dilations=[2, 1], group=2, relu=True, name="grouped")
    b.add_output(h, "y")
    return b.build({"name": "conv1d_net"})


NETS = [resnet_block, mobile_block, conv1d_net]


def reference(g, rep, x):
    env = {g.inputs[0].name: x}
    for n in rep.traversal.order:
        env[n.outputs[0]] = registry.call(registry.reference_op(n.op), n, [env[t] for t in n.inputs],
                                          g.buffers)
    return env


def _input(g, batch, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (batch,) + tuple(g.inputs[0].shape[1:])).astype(np.int8)


def _integer_engine(exe):
    if exe.engine == cpu_engines.FLOAT:
        pytest.skip("no onnxruntime engine admitted on this machine")


@pytest.fixture(scope="module", params=NETS, ids=lambda f: f.__name__)
def prepared(request):
    g = request.param()
    rep = validate(g, strict=False)
    return g, rep, cpu.prepare(g, rep.traversal, fuse=True)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fused_equals_reference(prepared, batch):
    g, rep, exe = prepared
    _integer_engine(exe)
    fused = [s for s in exe.steps if s.fused is not None]
    assert len(fused) == 1 and len(fused[0].nodes) == len(rep.traversal.order)  # all in one graph
    x = _input(g, batch, batch)
    want = reference(g, rep, x)["y"]
    assert len(np.unique(want)) > 3  # a real signal, not a saturated constant
    np.testing.assert_array_equal(exe.run({"x": x})[0]["y"], want)


def test_trace_gives_every_node_its_reference_output(prepared):
    g, rep, exe = prepared
    _integer_engine(exe)
    x = _input(g, 2, 7)
    env = reference(g, rep, x)
    _, steps = exe.run({"x": x}, trace=True)
    assert [t for _, t, _ in steps] == [n.outputs[0] for n in rep.traversal.order]
    for name, tensor, y in steps:
        np.testing.assert_array_equal(y, env[tensor], err_msg=name)


def test_per_node_path_gives_the_same_bits(prepared):
    g, rep, exe = prepared
    per_node = cpu.prepare(g, rep.traversal, fuse=False)
    assert all(s.fused is None for s in per_node.steps)
    x = _input(g, 3, 11)
    np.testing.assert_array_equal(per_node.run({"x": x})[0]["y"], exe.run({"x": x})[0]["y"])


def test_fuse_env_switches_fusion_off(monkeypatch):
    g = conv1d_net()
    rep = validate(g, strict=False)
    monkeypatch.setenv(cpu_fused.FUSE_ENV, "0")
    assert all(s.fused is None for s in cpu.prepare(g, rep.traversal).steps)
    monkeypatch.setenv(cpu_fused.FUSE_ENV, "1")
    exe = cpu.prepare(g, rep.traversal)
    assert exe.engine == cpu_engines.FLOAT or any(s.fused is not None for s in exe.steps)


def test_unlowerable_node_splits_the_run():
    """A softmax has no exact onnxruntime form: the graph ends before it, resumes after."""
    rng, w, s, bias = _rand(4)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 8, 9, 9), scale=0.02, zero_point=-5)
    h = build.conv(b, x, w(12, 8, 3, 3), s(12), bias(12), y_scale=0.3, y_zero_point=-128, name="c1")
    h = build.conv(b, h, w(12, 12, 1, 1), s(12), bias(12), y_scale=0.3, y_zero_point=0, name="c2")
    sm = build.softmax(b, h, axis=1, name="sm")
    h = build.conv(b, sm, w(6, 12, 1, 1), s(6), bias(6), y_scale=0.2, y_zero_point=0, name="c3")
    h = build.add(b, h, build.conv(b, sm, w(6, 12, 1, 1), s(6), None, y_scale=0.2, y_zero_point=4,
                                   name="c4"), y_scale=0.3, y_zero_point=1, name="sum")
    b.add_output(h, "y")
    b.add_output(sm, "probs")  # a graph output made inside a run
    g = b.build()
    rep = validate(g, strict=False)
    exe = cpu.prepare(g, rep.traversal)
    _integer_engine(exe)
    kinds = [[n.op for n in st.nodes] for st in exe.steps]
    assert ["softmax"] in kinds and sum(st.fused is not None for st in exe.steps) == 2
    x = _input(g, 3, 5)
    env = reference(g, rep, x)
    out, _ = exe.run({"x": x})
    for name in ("y", "probs"):
        np.testing.assert_array_equal(out[name], env[name])


def test_float_path_when_no_engine_is_admitted(monkeypatch):
    """No admitted onnxruntime engine: no fused graph, every conv on the float path."""
    monkeypatch.setenv(cpu_engines.ENV, cpu_engines.FLOAT)
    g = resnet_block()
    rep = validate(g, strict=False)
    exe = cpu.prepare(g, rep.traversal)
    assert exe.engine == cpu_engines.FLOAT and all(s.fused is None for s in exe.steps)
    assert set(exe.paths.values()) == {cpu_engines.FLOAT}
    x = _input(g, 2, 3)
    np.testing.assert_array_equal(exe.run({"x": x})[0]["y"], reference(g, rep, x)["y"])


def test_digits_whole_model_fused_vs_float(monkeypatch):
    """The shipped digits model: the fused graph (every node), the float path and the
    reference agree on 64 real images."""
    from synapse_gpu.session import load_any

    g = load_any(os.path.join(EXAMPLES, "digits_int8.onnx"))
    rep = validate(g, strict=False)
    with np.load(os.path.join(EXAMPLES, "digits_test.npz")) as z:
        x = z["images"][:64]
    spec = g.inputs[0]
    q = np.clip(np.rint(x.reshape((len(x),) + tuple(spec.shape[1:])) / np.float32(spec.scale))
                + spec.zero_point, -128, 127).astype(np.int8)
    name, out = spec.name, g.outputs[0].name
    want = reference(g, rep, q)[out]
    fused = cpu.prepare(g, rep.traversal, fuse=True)
    _integer_engine(fused)
    assert sum(len(s.nodes) for s in fused.steps if s.fused is not None) == len(rep.traversal.order)
    np.testing.assert_array_equal(fused.run({name: q})[0][out], want)
    monkeypatch.setenv(cpu_engines.ENV, cpu_engines.FLOAT)
    np.testing.assert_array_equal(cpu.prepare(g, rep.traversal).run({name: q})[0][out], want)
