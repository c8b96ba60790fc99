"""CUDA backend on a real GPU: bit-exact with the numpy reference and the CPU backend.

Every op (the cases of tests/cuda_host/cases.py, as the host tests run them),
the requantization helpers on the device itself (the __clzll path), whole
models, batch invariance and run-to-run equality. Marked `gpu`; skipped cleanly
where CuPy or a GPU is missing.
"""
import numpy as np
import pytest

from synapse_gpu import InferenceSession
from synapse_gpu.backends import cpu, cuda
from synapse_gpu.reference import requant as R
from synapse_gpu.reference.requant import requant_zp_inside, round_shift_zp

from cuda_host import cases

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def gpu():
    ok, reason = cuda.is_available()
    if not ok:
        pytest.skip(f"no usable GPU: {reason}")
    return reason


def run_gpu(graph, feeds, trace=False):
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav)
    return exe, trav, exe.run(feeds, trace=trace)


# ------------------------------------------------------------------ helpers on the device

_HELPER_KERNELS = r"""
extern "C" __global__ void t_bit_length(const i64* v, i64* out, i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) out[i] = syn_bit_length(v[i]);
}
extern "C" __global__ void t_round_to_24_bits(const i64* v, i64* out, i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) out[i] = syn_round_to_24_bits(v[i]);
}
extern "C" __global__ void t_round_shift_zp(const i64* v, const i64* s, const i64* z, i64* out,
                                            i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) out[i] = syn_round_shift_zp(v[i], s[i], z[i]);
}
extern "C" __global__ void t_requant(const i64* acc, const i64* m, const i64* k, const i64* z,
                                     i8* out, i8* out_zp_inside, i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) {
        out[i] = syn_requant(acc[i], m[i], k[i], z[i], -128, 127);
        out_zp_inside[i] = syn_requant_zp_inside(acc[i], m[i], k[i], z[i], -128, 127);
    }
}
"""


@pytest.fixture(scope="module")
def helpers():
    import cupy as cp

    header = (cuda._kernel_files() / "synapse_int.cuh").read_text()
    mod = cp.RawModule(code=header + _HELPER_KERNELS, options=("-std=c++17",))
    return cp, mod


def _launch(helpers, name, *arrays, out_dtypes):
    cp, mod = helpers
    n = arrays[0].size
    dev_in = [cp.asarray(np.ascontiguousarray(a, np.int64)) for a in arrays]
    dev_out = [cp.empty(n, dt) for dt in out_dtypes]
    mod.get_function(name)(((n + 255) // 256,), (256,), (*dev_in, *dev_out, np.int64(n)))
    return [o.get() for o in dev_out]


def _wide_ints(rng, n, bits):
    b = rng.integers(0, bits + 1, n)
    mag = rng.integers(0, 1 << 62, n, dtype=np.int64) >> (62 - b)
    return np.where(rng.random(n) < 0.5, -mag, mag)


def test_device_bit_length_and_rounding(helpers):
    rng = np.random.default_rng(0)
    p = np.array([1 << b for b in range(62)], np.int64)
    v = np.concatenate([[0, 1, 3], p, p - 1, p + 1, _wide_ints(rng, 1_000_000, 60)])
    (bl,) = _launch(helpers, "t_bit_length", np.abs(v), out_dtypes=[np.int64])
    np.testing.assert_array_equal(bl, R.bit_length(np.abs(v)))
    (r24,) = _launch(helpers, "t_round_to_24_bits", v, out_dtypes=[np.int64])
    np.testing.assert_array_equal(r24, R.round_to_24_bits(v))
    s = rng.integers(-70, 90, v.size)
    z = rng.integers(-128, 128, v.size)
    (rz,) = _launch(helpers, "t_round_shift_zp", v, s, z, out_dtypes=[np.int64])
    np.testing.assert_array_equal(rz, round_shift_zp(v, s, z))


def test_device_requant(helpers):
    rng = np.random.default_rng(1)
    n = 4_000_000
    acc = rng.integers(-(1 << 31), 1 << 31, n)
    acc[:4] = [0, -(1 << 31), (1 << 31) - 1, 1 << 24]
    M = np.where(rng.random(n) < 0.5, np.exp2(rng.uniform(-150, 64, n)),
                 np.exp2(rng.integers(-20, 3, n).astype(float))).astype(np.float32)
    m, k = R.quantize_multiplier(M)
    z = rng.integers(-128, 128, n)
    y, y_in = _launch(helpers, "t_requant", acc, m, k, z, out_dtypes=[np.int8, np.int8])
    np.testing.assert_array_equal(y, R.requant(acc, m, k, z))
    np.testing.assert_array_equal(y_in, requant_zp_inside(acc, m, k, z))


# ------------------------------------------------------------------ every op

@pytest.mark.parametrize("name,zx,zy", cases.op_params())
def test_op_matches_reference_and_cpu(name, zx, zy):
    graph, feeds = cases.op_case(name, zx, zy)
    _, trav, (out, _) = run_gpu(graph, feeds)
    want = cases.reference_run(graph, trav, feeds)
    cpu_out, _ = cpu.prepare(graph, trav).run(feeds)
    for t in graph.outputs:
        assert out[t.name].dtype == np.int8 and out[t.name].shape == want[t.name].shape
        np.testing.assert_array_equal(out[t.name], want[t.name])
        np.testing.assert_array_equal(out[t.name], cpu_out[t.name])


# ------------------------------------------------------------------ models

@pytest.mark.parametrize("model", sorted(cases.MODELS))
def test_model_matches_cpu_with_trace(model):
    graph, feeds = cases.model_case(model, batch=4)
    _, trav, (out, steps) = run_gpu(graph, feeds, trace=True)
    cpu_out, cpu_steps = cpu.prepare(graph, trav).run(feeds, trace=True)
    for t in graph.outputs:
        np.testing.assert_array_equal(out[t.name], cpu_out[t.name])
    assert [s[:2] for s in steps] == [s[:2] for s in cpu_steps]
    for (node, _, y), (_, _, want) in zip(steps, cpu_steps):
        np.testing.assert_array_equal(y, want, err_msg=f"first disagreement at node {node}")


@pytest.mark.parametrize("model", sorted(cases.MODELS))
def test_batch_invariance(model):
    """Sample i's output never depends on the other samples or the batch size."""
    graph, feeds = cases.model_case(model, batch=7)
    exe = cuda.prepare(graph, cases.traversal(graph))
    full, _ = exe.run(feeds)
    for i in range(7):
        one, _ = exe.run({k: v[i:i + 1] for k, v in feeds.items()})
        for t in graph.outputs:
            np.testing.assert_array_equal(one[t.name], full[t.name][i:i + 1])
    perm = np.random.default_rng(0).permutation(7)
    shuffled, _ = exe.run({k: v[perm] for k, v in feeds.items()})
    for t in graph.outputs:
        np.testing.assert_array_equal(shuffled[t.name], full[t.name][perm])


@pytest.mark.parametrize("model", sorted(cases.MODELS))
def test_run_to_run_equality(model):
    graph, feeds = cases.model_case(model, batch=5)
    trav = cases.traversal(graph)
    a = cuda.prepare(graph, trav)
    first, _ = a.run(feeds)
    for _ in range(3):
        again, _ = a.run(feeds)
        for t in graph.outputs:
            assert again[t.name].tobytes() == first[t.name].tobytes()
    other, _ = cuda.prepare(graph, trav).run(feeds)
    for t in graph.outputs:
        assert other[t.name].tobytes() == first[t.name].tobytes()


def test_many_blocks_large_conv():
    """Outputs spread over hundreds of blocks: the grid covers every element once."""
    from synapse_gpu import build
    from synapse_gpu.graph import GraphBuilder

    rng = np.random.default_rng(3)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 16, 32, 32), 0.02, -3)
    h = build.conv(b, x, cases.i8(rng, (32, 16, 3, 3)), rng.uniform(0.001, 0.004, 32)
                   .astype(np.float32), rng.integers(-5000, 5000, 32).astype(np.int32),
                   y_scale=0.1, y_zero_point=2, pads=[1, 1, 1, 1], relu=True)
    h = build.max_pool(b, h, [2, 2], strides=[2, 2])
    b.add_output(h, "y")
    graph = b.build()
    feeds = cases.feeds_for(graph, rng, 8)
    _, trav, (out, _) = run_gpu(graph, feeds)
    cpu_out, _ = cpu.prepare(graph, trav).run(feeds)
    np.testing.assert_array_equal(out["y"], cpu_out["y"])


def test_session_digest_equal_on_cpu_and_gpu():
    graph, feeds = cases.model_case("tiny_cnn", batch=6)
    x = feeds["input"]
    gpu_sess = InferenceSession(graph, device="cuda")
    cpu_sess = InferenceSession(graph, device="cpu")
    assert gpu_sess.device == "cuda"
    g = gpu_sess.run_full(None, {"input": x}, output_type="int8", trace=True)
    c = cpu_sess.run_full(None, {"input": x}, output_type="int8", trace=True)
    assert g.digest == c.digest
    assert [e.digest for e in g.trace] == [e.digest for e in c.trace]


def _cpu_gpu(model, feeds, trace=False):
    runs = [InferenceSession(model, device=d).run_full(None, feeds, output_type="int8", trace=trace)
            for d in ("cpu", "cuda")]
    for name, a in runs[0].int8_outputs.items():
        np.testing.assert_array_equal(runs[1].int8_outputs[name], a)
    assert runs[0].digest == runs[1].digest
    return runs


def test_bundled_digits_model_cpu_equals_gpu():
    from synapse_gpu.examples.demo import example_path

    data = np.load(str(example_path("digits_test.npz")))
    model = str(example_path("digits.syn"))
    cpu_run, gpu_run = _cpu_gpu(model, {"images": data["images"]}, trace=True)
    assert [e.digest for e in cpu_run.trace] == [e.digest for e in gpu_run.trace]
    gpu_sess = InferenceSession(model, device="cuda")
    batch = gpu_sess.run(None, {"images": data["images"][:32]}, output_type="int8")[0]
    for i in range(32):  # batch invariance on the device
        alone = gpu_sess.run(None, {"images": data["images"][i:i + 1]}, output_type="int8")[0]
        np.testing.assert_array_equal(alone[0], batch[i])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_quantized_resnet50_cpu_equals_gpu(fmt, tmp_path_factory):
    from synapse_gpu.examples.resnet50 import images, quantized_resnet50

    path = quantized_resnet50(str(tmp_path_factory.mktemp("r50")), formats=(fmt,))[fmt]
    x = images(4, 3)
    cpu_run, gpu_run = _cpu_gpu(path, {"data": x})
    one = InferenceSession(path, device="cuda").run(None, {"data": x[2:3]}, output_type="int8")[0]
    np.testing.assert_array_equal(one[0], gpu_run.int8_outputs["logits"][2])
