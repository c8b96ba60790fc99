"""CUDA graphs: each batch size's launches captured once and replayed, the same bits.

Runs on a real GPU where CuPy finds one, else on the emulated device (tests/emucuda),
whose stream capture records the launches and copies instead of running them and
refuses what CUDA refuses during a capture. Checked: replay equal to plain launches
and to the numpy reference on digits and a ResNet-like model at batch 1 and 37, with
new inputs every run (a replay reads the input slots as they are), a plan and a
graph per batch size, the fallbacks (trace, no stream capture, a failed capture),
the switch (session option, environment), and the emulator's capture rules.
"""
import contextlib

import numpy as np
import pytest

import synapse_gpu
from synapse_gpu import InferenceSession
from synapse_gpu.backends import cuda, cuda_device
from synapse_gpu.errors import DeviceError, OptionError
from synapse_gpu.examples.demo import example_path
from synapse_gpu.modelfile import load_model
from synapse_gpu.options import CUDA_GRAPHS_KEY

from cuda_host import cases
from synapse_devices import gpu  # noqa: F401  (autouse: a GPU, else the emulator)
from test_cuda_variants import small_resnet

pytestmark = pytest.mark.gpu

MODELS = {"digits": lambda: load_model(str(example_path("digits.syn"))),
          "small_resnet": small_resnet}


@pytest.fixture
def emulated():
    """The emulated device (the checks that read its launch log or its capture rules)."""
    import cupy

    if cupy.__version__ != "emucuda":
        pytest.skip("the emulator's own checks (a real GPU runs the others)")
    from emucuda import cupy_standin

    return cupy_standin.device()


def _launch_log():
    import cupy

    if cupy.__version__ != "emucuda":
        return None
    from emucuda import cupy_standin

    return cupy_standin.device()


def _expect(graph, trav, feeds):
    env = cases.reference_run(graph, trav, feeds)
    return {t.name: env[t.name] for t in graph.outputs}


def _equal(got, want, what):
    for name, a in want.items():
        np.testing.assert_array_equal(got[name], a, err_msg=what)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_replay_matches_plain_launches_and_reference(model):
    """Batch sizes 1 and 37 interleaved, new random inputs every run: the graph runs
    (replays issue no launch of their own) give the reference's bits and plain launches'."""
    graph = MODELS[model]()
    trav = cases.traversal(graph)
    replayed = cuda.prepare(graph, trav, cuda_graphs=True)
    plain = cuda.prepare(graph, trav, cuda_graphs=False)
    dev, seen = _launch_log(), {1: [], 37: []}
    for i, batch in enumerate((1, 37, 1, 37, 37, 1, 37, 1)):
        feeds = cases.feeds_for(graph, np.random.default_rng([i, batch]), batch)
        want = _expect(graph, trav, feeds)
        before = dev and (len(dev.launches), dev.graph_launches)
        got, _ = replayed.run(feeds)
        seen[batch].append(got)
        runs = len(seen[batch])  # 1: warm-up, 2: capture and replay, then replays only
        if dev and runs > 2:
            assert (len(dev.launches), dev.graph_launches) == (before[0], before[1] + 1)
        note = replayed.graph_notes[batch]
        assert note.startswith("CUDA graph of") == (runs > 1), note
        _equal(got, want, f"{model} batch {batch} run {i} (graph)")
        _equal(plain.run(feeds)[0], want, f"{model} batch {batch} run {i} (plain)")
    assert plain.graph_notes[1].startswith("CUDA graphs off")
    for outs in seen.values():  # fresh inputs gave fresh outputs: the replay read them
        assert len({tuple(o[t.name].tobytes() for t in graph.outputs) for o in outs}) == len(outs)


def test_plans_kept_per_batch_size_and_evicted_within_budget(monkeypatch):
    graph = small_resnet()
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav, cuda_graphs=True)
    feeds = {b: cases.feeds_for(graph, np.random.default_rng(b), b) for b in (1, 37, 5)}
    for b in (1, 1, 37, 37):
        exe.run(feeds[b])
    one, slots = exe._plans[1], exe._plans[1].views["x"].data.ptr
    exe.run(feeds[1])  # the same plan, its graph, its input slot: nothing planned again
    assert exe._plans[1] is one and one.views["x"].data.ptr == slots and one.graph is not None
    assert list(exe._plans) == [37, 1]  # least recently used first

    monkeypatch.setattr(cuda, "PLAN_BYTES", one.nbytes + exe._plans[37].nbytes)
    exe.run(feeds[5])  # batch 5 needs room: the least recently used plan (37) goes
    assert list(exe._plans) == [1, 5]
    for b in (37, 37, 37):  # planned and captured again, same bits
        _equal(exe.run(feeds[b])[0], _expect(graph, trav, feeds[b]), f"batch {b} re-planned")
    assert exe.graph_notes[37].startswith("CUDA graph of")

    monkeypatch.setattr(cuda, "PLAN_BYTES", one.nbytes - 1)  # too big to keep: no graph
    exe._plans.clear()
    for _ in range(3):
        _equal(exe.run(feeds[1])[0], _expect(graph, trav, feeds[1]), "batch 1 over budget")
    assert "MiB that plans are kept within" in exe.graph_notes[1]
    assert exe._plans[1].graph is None


def _three_runs(exe, graph, trav, trace=False):
    for i in range(3):
        feeds = cases.feeds_for(graph, np.random.default_rng([7, i]), 4)
        got, steps = exe.run(feeds, trace=trace)
        _equal(got, _expect(graph, trav, feeds), f"run {i}")
    return steps


def test_trace_runs_plain_launches_and_says_why():
    graph = small_resnet()
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav, cuda_graphs=True)
    steps = _three_runs(exe, graph, trav, trace=True)
    assert len(steps) == len(trav.order)
    assert exe.graph_notes[4] == "trace=True reads every node's output between launches"
    assert exe._plans[4].graph is None


def test_cupy_without_stream_capture_falls_back(monkeypatch, capsys):
    import cupy

    graph = small_resnet()
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav, cuda_graphs=True, verbose=True)
    monkeypatch.delattr(cupy.cuda, "Graph")  # as in CuPy 9
    _three_runs(exe, graph, trav)
    assert exe.graph_notes[4].endswith("has no stream capture (CuPy 10 or later has)")
    assert "batch 4: CuPy" in capsys.readouterr().out  # --verbose names the reason
    assert exe._plans[4].graph is None


def test_a_capture_that_fails_warns_and_runs_plain(monkeypatch):
    """A backend bug (a synchronize between launches) is refused by the capture: that
    batch size runs plain launches from then on, with a warning that names the error."""
    graph = small_resnet()
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav, cuda_graphs=True)
    launch = exe.dev.launch

    def launch_then_wait(fn, n, args):
        launch(fn, n, args)
        exe.dev.synchronize()

    monkeypatch.setattr(exe.dev, "launch", launch_then_wait)
    with pytest.warns(RuntimeWarning, match="StreamCaptureUnsupported"):
        _three_runs(exe, graph, trav)
    assert exe.graph_notes[4].startswith("capture failed (")
    assert exe._plans[4].graph is None


def test_switch_from_session_option_and_environment(monkeypatch):
    graph = small_resnet()
    monkeypatch.delenv(cuda.GRAPHS_ENV, raising=False)
    assert InferenceSession(graph, device="cuda")._exe.cuda_graphs is False  # off by default
    monkeypatch.setenv(cuda.GRAPHS_ENV, "1")
    assert InferenceSession(graph, device="cuda")._exe.cuda_graphs is True
    so = synapse_gpu.SessionOptions()
    so.add_session_config_entry(CUDA_GRAPHS_KEY, "0")  # the session option wins
    sess = InferenceSession(graph, device="cuda", sess_options=so)
    assert sess._exe.cuda_graphs is False
    so.add_session_config_entry(CUDA_GRAPHS_KEY, "maybe")
    with pytest.raises(OptionError, match="synapse.cuda_graphs"):
        InferenceSession(graph, device="cuda", sess_options=so)
    monkeypatch.setenv(cuda.GRAPHS_ENV, "yes")
    with pytest.raises(OptionError, match="SYNAPSE_CUDA_GRAPHS"):
        InferenceSession(graph, device="cuda")


def test_session_chunked_runs_replay_a_graph_per_chunk_size(monkeypatch):
    """The session's chunks (4, 4, 2 samples here) are batch sizes like any other."""
    from synapse_gpu import session

    graph = small_resnet()
    trav = cases.traversal(graph)
    so = synapse_gpu.SessionOptions()
    so.add_session_config_entry(CUDA_GRAPHS_KEY, "1")
    sess = InferenceSession(graph, device="cuda", sess_options=so)
    monkeypatch.setattr(session, "RUN_BYTES", 4 * sess.report.activation_bytes)
    for i in range(3):
        feeds = cases.feeds_for(graph, np.random.default_rng([9, i]), 10)
        got = sess.run_full(None, feeds, output_type="int8").int8_outputs
        _equal(got, _expect(graph, trav, feeds), f"chunked run {i}")
    assert sess._exe.graph_notes[4].startswith("CUDA graph of")
    assert sess._exe.graph_notes[2].startswith("CUDA graph of")


def test_grid_over_the_driver_limit_is_refused_before_the_launch(emulated):
    exe = cuda.prepare(small_resnet(), cases.traversal(small_resnet()))
    fn = exe.kernel("relu_v1")
    issued = len(emulated.launches)
    n = (cuda_device.MAX_GRID_X + 1) * cuda_device.BLOCK
    with pytest.raises(DeviceError, match=r"relu_v1: .* over the driver's grid limit of 2147483647"):
        exe.dev.launch(fn, n, ())
    assert len(emulated.launches) == issued


# ------------------------------------------------------------ the emulator's capture rules

ADD_ONE = r"""
extern "C" __global__ void add_one(const signed char* x, signed char* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = (signed char)(x[i] + 1);
}
"""


@pytest.fixture
def capturing(emulated):
    """cupy (the stand-in) and a non-blocking stream; its capture is ended afterwards."""
    import cupy

    s = cupy.cuda.Stream(non_blocking=True)
    yield cupy, s
    if s.is_capturing():  # a failed check: leave no capture open for the next test
        with contextlib.suppress(cupy.cuda.runtime.CUDARuntimeError):
            s.end_capture()


def test_emulator_replay_reads_current_inputs(capturing):
    cp, s = capturing
    n = 1000  # four blocks of 256
    kern = cp.RawKernel(ADD_ONE, "add_one")
    x, y, z = cp.empty(n, cp.int8), cp.empty(n, cp.int8), cp.empty(n, cp.int8)
    with s:
        s.begin_capture()
        kern((4,), (256,), (x, y, np.int64(n)))
        z[...] = y
        graph = s.end_capture()
    rng = np.random.default_rng(0)
    for _ in range(3):
        h = rng.integers(-128, 127, n).astype(np.int8)
        x.set(h, stream=s)
        graph.launch(stream=s)
        np.testing.assert_array_equal(z.get(stream=s), h + 1)


@pytest.mark.parametrize("illegal", ["stream synchronize", "device synchronize",
                                     "device to host", "host to device", "allocation"])
def test_emulator_refuses_what_cuda_refuses_during_capture(capturing, illegal):
    cp, s = capturing
    a = cp.empty(8, cp.int8)
    do = {"stream synchronize": s.synchronize, "device synchronize": cp.cuda.Device().synchronize,
          "device to host": lambda: a.get(stream=s),
          "host to device": lambda: a.set(np.zeros(8, np.int8), stream=s),
          "allocation": lambda: cp.empty(8, cp.int8)}[illegal]
    with s:
        s.begin_capture()
        a[...] = 1
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="StreamCapture|capture"):
            do()
        if illegal != "allocation":  # the driver invalidates the capture; allocating is ours
            with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
                s.end_capture()


def test_emulator_capture_states(capturing):
    cp, s = capturing
    with pytest.raises(RuntimeError, match="legacy"):
        cp.cuda.Stream.null.begin_capture()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="not capturing"):
        s.end_capture()
    s.begin_capture()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="capturing already"):
        s.begin_capture()
    s.end_capture()
    a, blocking = cp.empty(4, cp.int8), cp.cuda.Stream()
    blocking.begin_capture()
    with cp.cuda.Stream.null:  # the legacy stream would wait on the blocking stream's capture
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="StreamCaptureImplicit"):
            a[...] = 0
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
        blocking.end_capture()
