"""Conv v6 (cuda_kernels/conv.cu: channels-last implicit GEMM) and the layout pass
that feeds it (cuda_variants.Layout: NHWC runs, layout.cu conversions at their
edges), on the emulated device (or a real GPU): v6 gives v1's bits over the conv
shape classes (channels per group a multiple of 8, the 8-byte loads and 1x1 cp.async
columns; odd ones, the byte-by-byte gather), whole models keep their outputs, digests
and traces with v6 forced, and a run of convs converts once in and once out.
"""
import numpy as np
import pytest

from synapse_gpu import InferenceSession, build
from synapse_gpu.backends import cpu, cuda, cuda_variants
from synapse_gpu.examples.demo import example_path
from synapse_gpu.graph import GraphBuilder

import test_cuda_variants as T
from cuda_host import cases
from synapse_devices import gpu  # noqa: F401  (autouse: a GPU, else the emulator)

pytestmark = pytest.mark.gpu

# T.CONV's layout: channels per group 16 and 8 (the 8-byte loads; padding taps as z_x)
NHWC_CONV = {
    "c16_3x3_pad_two_tiles": (16, 70, 1, (6, 5), (3, 3), [1, 1], [1, 1, 1, 1], [1, 1], True),
    "c16_group2_strided": (16, 6, 2, (7, 6), (3, 3), [2, 1], [1, 0, 0, 1], [1, 1], True),
}
CASES = {"tile_edges_odd_c": 0, "k64_m64_1x1": 1, "k33_group3_strided": 2, "conv1d_k31": 0,
         "conv3d": 1, "dw_3x3": 2, **{k: i for i, k in enumerate(NHWC_CONV)}}  # -> ZP_BATCH


@pytest.mark.parametrize("name", sorted(CASES))
def test_v6_conv_matches_reference(name, monkeypatch):
    for k, spec in NHWC_CONV.items():
        monkeypatch.setitem(T.CONV, k, spec)
    zps, batch = T.ZP_BATCH[CASES[name]]
    graph, feeds = T._conv_case(name, *zps, batch)
    T._check_variant(graph, feeds, "v6")


def resnet_block(seed=0):
    """Stem conv, max_pool (channels-first: a run's edge), a residual block (two convs,
    add with relu), a 1x1 conv, global pooling and a classifier."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 3, 11, 11), 0.02, -128)

    def conv(h, C, M, k, relu=True):
        return build.conv(b, h, cases.i8(rng, (M, C, k, k)),
                          rng.uniform(0.002, 0.006, M).astype(np.float32),
                          rng.integers(-3000, 3000, M).astype(np.int32), y_scale=0.05,
                          y_zero_point=int(rng.integers(-20, 20)),
                          w_zero_point=int(rng.integers(-3, 4)),
                          pads=[k // 2] * 4, relu=relu)

    h = build.max_pool(b, conv(x, 3, 16, 3), [2, 2], strides=[2, 2])
    h = build.add(b, conv(conv(h, 16, 16, 3), 16, 16, 3, relu=False), h, y_scale=0.06,
                  y_zero_point=127, relu=True)
    h = build.global_avg_pool(b, conv(h, 16, 24, 1), y_scale=0.05, y_zero_point=0)
    h = build.dense(b, build.flatten(b, h), cases.i8(rng, (10, 24)),
                    rng.uniform(0.002, 0.006, 10).astype(np.float32), y_scale=0.1, y_zero_point=0)
    b.add_output(h, "y")
    return b.build({"name": "resnet_block"})


def _conversions(exe):
    """{kind of step: count} of the layout conversions of the last plan."""
    names = {exe.kernel(k): k for k in (cuda_variants.TO_NHWC, cuda_variants.TO_NCHW)}
    got = {}
    for todo in exe._plan.steps:
        for kind, *step in todo:
            if kind != "copy" and step[0] in names:
                key = f"{names[step[0]]}:{kind}"
                got[key] = got.get(key, 0) + 1
    return got


@pytest.mark.parametrize("batch", [1, 37])
def test_resnet_block_identical_with_v6(batch, monkeypatch):
    """Outputs, digest and trace (every node's output, channels-first) as with v1."""
    graph = resnet_block()
    feeds = cases.feeds_for(graph, np.random.default_rng(batch), batch)
    want, _ = cpu.prepare(graph, cases.traversal(graph)).run(feeds)
    runs = {}
    for v in ("v1", "v6"):
        monkeypatch.setenv(cuda_variants.ENV, v)
        runs[v] = InferenceSession(graph, device="cuda").run_full(None, feeds, output_type="int8")
        np.testing.assert_array_equal(runs[v].int8_outputs["y"], want["y"], err_msg=v)
    assert runs["v1"].digest == runs["v6"].digest
    traces = {v: cuda.prepare(graph, cases.traversal(graph), variant=v).run(feeds, trace=True)[1]
              for v in ("v1", "v6")}
    assert [n for n, _, _ in traces["v1"]] == [n for n, _, _ in traces["v6"]]
    for (n, _, a), (_, _, b) in zip(traces["v1"], traces["v6"]):
        np.testing.assert_array_equal(b, a, err_msg=n)


def test_layout_pass_converts_only_at_run_edges():
    """resnet_block: in before the stem conv and after max_pool; out after the stem
    (max_pool reads it) and after the 1x1 conv (global pooling); the residual block's
    convs, its add and the 1x1 conv stay channels-last; every other result is converted
    on trace runs only."""
    graph = resnet_block()
    exe = cuda.prepare(graph, cases.traversal(graph), variant="v6")
    chosen = exe.variants.chosen
    assert sorted(v for v in chosen.values()) == ["nhwc", "v1", "v6", "v6", "v6", "v6"], chosen
    assert _conversions(exe) == {"nchw_to_nhwc_v1:launch": 2, "nhwc_to_nchw_v1:launch": 2,
                                 "nhwc_to_nchw_v1:trace": 3}
    assert _conversions(cuda.prepare(graph, cases.traversal(graph), variant="v5")) == {}


def test_a_chain_of_convs_converts_once_in_and_once_out():
    """conv, relu, conv, conv: one conversion in, one out; the three inner results
    converted on trace runs only."""
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    h = b.add_input("x", (-1, 8, 9, 9), 0.02, 3)
    for i in range(3):
        h = build.conv(b, h, cases.i8(rng, (8, 8, 3, 3)), np.full(8, 0.004, np.float32),
                       y_scale=0.05, y_zero_point=-7, pads=[1] * 4)
        if i == 0:
            h = build.relu(b, h)
    b.add_output(h, "y")
    graph = b.build({"name": "conv_chain"})
    exe = cuda.prepare(graph, cases.traversal(graph), variant="v6")
    assert sorted(exe.variants.chosen.values()) == ["nhwc", "v6", "v6", "v6"]
    assert _conversions(exe) == {"nchw_to_nhwc_v1:launch": 1, "nhwc_to_nchw_v1:launch": 1,
                                 "nhwc_to_nchw_v1:trace": 3}
    feeds = cases.feeds_for(graph, rng, 3)
    want, _ = cpu.prepare(graph, cases.traversal(graph)).run(feeds)
    np.testing.assert_array_equal(exe.run(feeds)[0]["y"], want["y"])
    assert len(np.unique(want["y"])) > 16  # not saturated


def test_digits_model_identical_with_v6(monkeypatch):
    images = np.load(str(example_path("digits_test.npz")))["images"][:37]
    model = str(example_path("digits.syn"))
    runs = {}
    for v in ("v1", "v6"):
        monkeypatch.setenv(cuda_variants.ENV, v)
        sess = InferenceSession(model, device="cuda")
        assert ("v6" in sess._exe.variants.chosen.values()) == (v == "v6")
        runs[v] = sess.run_full(None, {"images": images}, output_type="int8")
    for name, a in runs["v1"].int8_outputs.items():
        np.testing.assert_array_equal(runs["v6"].int8_outputs[name], a, err_msg=name)
    assert runs["v1"].digest == runs["v6"].digest


def test_v6_fed_channels_first_bytes_is_caught(monkeypatch):
    """The comparison has teeth: conv_v6 handed the input's channels-first slot (the
    conversion in skipped) gives other outputs."""
    real = cuda_variants._renamed

    def renamed(step, names):  # conv_v6's input left channels-first
        x = step.args[0].name if step.kernel == "conv_v6" else None
        return real(step, {t: n for t, n in names.items() if t != x})

    monkeypatch.setattr(cuda_variants, "_renamed", renamed)
    graph, feeds = T._conv_case("tile_edges_odd_c", -37, 1, 1)
    with pytest.raises(AssertionError):
        T._check_variant(graph, feeds, "v6")


def test_v6_replayed_as_a_cuda_graph():
    """The captured traversal holds the run's conversions, not the trace-only ones."""
    graph = resnet_block()
    feeds = cases.feeds_for(graph, np.random.default_rng(3), 1)
    want, _ = cpu.prepare(graph, cases.traversal(graph)).run(feeds)
    exe = cuda.prepare(graph, cases.traversal(graph), variant="v6", cuda_graphs=True)
    for _ in range(3):
        np.testing.assert_array_equal(exe.run(feeds)[0]["y"], want["y"])
    n = sum(1 for todo in exe._plan.steps for kind, *_ in todo if kind != "trace")
    assert exe.graph_notes[1] == f"CUDA graph of {n} launches, replayed"


def test_v6_below_sm80_runs_the_dp4a_core(gpu, monkeypatch):
    """conv_v6 compiled for sm_75 (__CUDA_ARCH__ 750: v2's dp4a tiles, no mma.sync)."""
    if "emucuda" not in gpu:
        pytest.skip("the emulated device compiles for the architecture it is told")
    from emucuda import device as emu

    monkeypatch.setattr(emu, "DEFAULT_ARCH", 75)
    for k, spec in NHWC_CONV.items():
        monkeypatch.setitem(T.CONV, k, spec)
    for name in ("c16_3x3_pad_two_tiles", "tile_edges_odd_c"):
        T._check_variant(*T._conv_case(name, 127, -128, 37), "v6")
