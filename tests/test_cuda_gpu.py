"""The CUDA backend on a GPU: bit-exact with the numpy reference and the CPU backend.

Runs on a real GPU where CuPy finds one, else on the emulated device
(tests/emucuda: the same .cu sources, every thread of the real launch geometry,
the backend unchanged through a `cupy` stand-in); SYNAPSE_GPU_TESTS=emulated
forces the emulator. Every op (the cases of tests/cuda_host/cases.py) at a batch
that spans several blocks, the requantization helpers on the device itself (the
__clzll path), whole models (the models of cases.py, digits, ResNet-50 at batch
1), batch invariance, run-to-run equality, digest and trace equal to the CPU
backend. The checks live in tests/cuda_host/gpu_checks.py.
"""

import numpy as np
import pytest

from synapse_gpu import InferenceSession
from synapse_gpu.backends import cpu, cuda

from cuda_host import cases, gpu_checks
from cuda_host.gpu_checks import run_gpu
from synapse_devices import gpu  # noqa: F401  (autouse: a GPU, else the emulator)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def helpers():
    return gpu_checks.Helpers()


def test_device_bit_length_and_rounding(helpers):
    gpu_checks.check_bit_length_and_rounding(helpers)


def test_device_requant(helpers):
    gpu_checks.check_requant(helpers)


@pytest.mark.parametrize("name,zx,zy", cases.op_params())
def test_op_matches_reference_and_cpu(name, zx, zy):
    gpu_checks.check_op(name, zx, zy)


@pytest.mark.parametrize("model", sorted(cases.MODELS))
def test_model_matches_cpu_with_trace(model):
    gpu_checks.check_model_trace(model)


@pytest.mark.parametrize("model", sorted(cases.MODELS))
def test_batch_invariance(model):
    gpu_checks.check_batch_invariance(model)


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
def test_quantized_resnet50_cpu_equals_gpu(tmp_path_factory):
    """ResNet-50 (QDQ import), one image: every conv, pool and add shape of a real network."""
    from synapse_gpu.examples.resnet50 import images, quantized_resnet50

    path = quantized_resnet50(str(tmp_path_factory.mktemp("r50")), formats=("QDQ",))["QDQ"]
    _cpu_gpu(path, {"data": images(1, 3)})
