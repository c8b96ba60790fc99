"""GPU arrays in and out of a session, and IO binding on 'cuda': on the emulated CUDA
device (tests/emucuda, the real backend through its `cupy` stand-in) and, marked `gpu`,
on a real GPU with CuPy (and PyTorch where installed).

What is checked: a feed already on the GPU is used there (no host-to-device write
during the run), device outputs are device arrays, and the digest and the values are
the same as with numpy feeds. The emulator's stand-in has no elementwise float
operations, so float GPU feeds and outputs (the boundary quantize on the device) run on
the real GPU only; their arithmetic is checked here against the reference with numpy as
the array module.
"""
import numpy as np
import pytest

import synapse_gpu
import synapse_gpu.errors
from synapse_gpu.arrays import dequantize_xp, quantize_xp
from synapse_gpu.backends import cuda
from synapse_gpu.reference.boundary import dequantize, quantize

from test_migration_ort import conv_model, images


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import onnx

    p = tmp_path_factory.mktemp("g") / "conv.onnx"
    onnx.save(conv_model(), p)
    return str(p)


@pytest.fixture(scope="module")
def host_session(model_path):
    return synapse_gpu.InferenceSession(model_path, device="cpu")


@pytest.fixture(scope="module", params=["emulated", pytest.param("real", marks=pytest.mark.gpu)])
def gpu(request):
    """(the cupy module, a CUDA session) on the emulated device or a real GPU."""
    if request.param == "emulated":
        standin = pytest.importorskip("emucuda.cupy_standin")
        with standin.installed() as cp:
            yield cp, request.param
        return
    ok, reason = cuda.is_available()
    if not ok:
        pytest.skip(f"no usable GPU: {reason}")
    import cupy

    yield cupy, request.param


def cuda_session(path):
    sess = synapse_gpu.InferenceSession(path, providers=[("CUDAExecutionProvider", {"device_id": 0})])
    assert sess.get_providers() == ["CUDAExecutionProvider"]
    assert sess.get_provider_options() == {"CUDAExecutionProvider": {"device_id": "0"}}
    return sess


def int8_images(host_session, n, seed):
    t = host_session.graph.inputs[0]
    return quantize(images(n, seed), t.scale, t.zero_point)


def test_int8_gpu_feed_used_in_place(gpu, model_path, host_session, monkeypatch):
    cp, _ = gpu
    sess = cuda_session(model_path)
    xq = int8_images(host_session, 3, seed=11)
    want = host_session.run_full(None, {"x": xq}, output_type="int8")
    xd = cp.asarray(xq)
    writes = []
    real_set = cp.ndarray.set
    monkeypatch.setattr(cp.ndarray, "set", lambda self, *a, **k: (writes.append(1),
                                                                  real_set(self, *a, **k))[1])
    r = sess.run_full(None, {"x": xd}, output_type="int8", device_outputs=True)
    assert writes == []  # no host-to-device copy: the feed never left the GPU
    (y,) = r.outputs
    assert isinstance(y, cp.ndarray)
    np.testing.assert_array_equal(y.get(), want.outputs[0])
    assert r.digest == want.digest
    # host feed, host outputs on the same session: same bits
    assert sess.run_full(None, {"x": xq}).digest == want.digest


def test_iobinding_on_cuda(gpu, model_path, host_session):
    cp, _ = gpu
    sess = cuda_session(model_path)
    xq = int8_images(host_session, 2, seed=12)
    want = host_session.run(None, {"x": xq}, output_type="int8")[0]
    b = sess.io_binding()
    b.bind_ortvalue_input("x", synapse_gpu.OrtValue.ortvalue_from_numpy(xq, "cuda", 0))
    b.bind_output("y", "cuda", element_type=np.int8)
    sess.run_with_iobinding(b)
    (out,) = b.get_outputs()
    assert out.device_name() == "cuda" and isinstance(out._array, cp.ndarray)
    np.testing.assert_array_equal(b.copy_outputs_to_cpu()[0], want)
    yv = synapse_gpu.OrtValue.ortvalue_from_shape_and_type([2, 4, 6, 6], np.int8, "cuda", 0)
    b.bind_ortvalue_output("y", yv)  # preallocated on the GPU, written in place
    sess.run_with_iobinding(b)
    np.testing.assert_array_equal(yv.numpy(), want)


def test_device_id_out_of_range(gpu, model_path):
    cp, _ = gpu
    n = cp.cuda.runtime.getDeviceCount()
    with pytest.raises(synapse_gpu.errors.DeviceError, match=f"device_id={n}: .* {n} GPU"):
        synapse_gpu.InferenceSession(model_path, providers=[("CUDAExecutionProvider",
                                                            {"device_id": n})])


def test_float_gpu_feeds_and_outputs(gpu, model_path, host_session):
    cp, kind = gpu
    if kind == "emulated":
        pytest.skip("the emulator's cupy stand-in has no elementwise float operations")
    sess = cuda_session(model_path)
    x = images(4, seed=13)
    want = host_session.run_full(None, {"x": x})
    r = sess.run_full(None, {"x": cp.asarray(x)}, device_outputs=True)
    assert r.digest == want.digest
    assert isinstance(r.outputs[0], cp.ndarray)
    np.testing.assert_array_equal(r.outputs[0].get(), want.outputs[0])
    # raw device pointers, as onnxruntime's docs bind PyTorch tensors
    xd, yd = cp.asarray(x), cp.zeros((4, 4, 6, 6), cp.float32)
    b = sess.io_binding()
    b.bind_input("x", "cuda", 0, np.float32, list(xd.shape), xd.data.ptr)
    b.bind_output("y", "cuda", 0, np.float32, list(yd.shape), yd.data.ptr)
    sess.run_with_iobinding(b)
    np.testing.assert_array_equal(yd.get(), want.outputs[0])


@pytest.mark.gpu
def test_torch_cuda_tensors(gpu, model_path, host_session):
    cp, kind = gpu
    torch = pytest.importorskip("torch")
    if kind == "emulated" or not torch.cuda.is_available():
        pytest.skip("needs PyTorch with CUDA on a real GPU")
    sess = cuda_session(model_path)
    x = images(3, seed=14)
    want = host_session.run_full(None, {"x": x})
    r = sess.run_full(None, {"x": torch.from_numpy(x).cuda()}, device_outputs=True)
    assert r.digest == want.digest
    np.testing.assert_array_equal(torch.from_dlpack(r.outputs[0]).cpu().numpy(), want.outputs[0])


# ------------------------------------------------------------------ the device boundary's arithmetic

def boundary_edges():
    rng = np.random.default_rng(15)
    x = rng.uniform(-3, 3, 4000).astype(np.float32)
    s = np.float32(0.02)
    ties = (np.arange(-130, 130, dtype=np.float32) + np.float32(0.5)) * s  # near-ties after x / s
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e30, -1e30, 1e-40, -1e-40], np.float32)
    return np.concatenate([x, ties, special]), s


@pytest.mark.parametrize("zero_point", [-128, -3, 0, 127])
def test_device_boundary_arithmetic_matches_reference(zero_point):
    x, s = boundary_edges()
    np.testing.assert_array_equal(quantize_xp(np, x, s, zero_point), quantize(x, s, zero_point))
    with np.errstate(over="ignore"):  # 1e30 -> float16 inf, on purpose
        h = x.astype(np.float16)
    np.testing.assert_array_equal(quantize_xp(np, h, s, zero_point), quantize(h, s, zero_point))
    q = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(dequantize_xp(np, q, s, zero_point), dequantize(q, s, zero_point))
