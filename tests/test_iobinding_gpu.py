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
    cp, kind = gpu
    sess = cuda_session(model_path)
    xq = int8_images(host_session, 3, seed=11)
    want = host_session.run_full(None, {"x": xq}, output_type="int8")
    xd = cp.asarray(xq)
    writes = []
    if kind == "emulated":  # CuPy's own ndarray is an extension type: no spy there
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


# ------------------------------------------------------------------ float GPU feeds, plumbing only
# The session's path for float GPU arrays (adopt, NaN check, quantize and dequantize on the
# device, device-to-device feed copy, device outputs, digest) on a stand-in device whose
# arrays are numpy memory behind a type that is not np.ndarray; the kernels are the
# host-compiled ones (tests/cuda_host). The arithmetic is the reference's (above); that it
# is the GPU's too is test_float_gpu_feeds_and_outputs on a real GPU.

class DevArray:
    def __init__(self, a):
        self.a = np.asarray(a)

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    ndim = property(lambda self: self.a.ndim)

    def __len__(self):
        return len(self.a)

    def __getitem__(self, key):  # slices (a chunked run), like any device array
        return DevArray(self.a[key])

    def astype(self, t):
        return DevArray(self.a.astype(t))

    def __truediv__(self, o):
        return DevArray(self.a / o)

    def __add__(self, o):
        return DevArray(self.a + o)

    def __sub__(self, o):
        return DevArray(self.a - o)

    def __mul__(self, o):
        return DevArray(self.a * o)

    def any(self):
        return self.a.any()

    def get(self):
        return self.a.copy()


def _stand_in_xp():
    import types

    return types.SimpleNamespace(
        float32=np.float32, int32=np.int32, int8=np.int8,
        rint=lambda d: DevArray(np.rint(d.a)), isnan=lambda d: DevArray(np.isnan(d.a)),
        clip=lambda d, lo, hi: DevArray(np.clip(d.a, lo, hi)))


@pytest.fixture(scope="module")
def array_device_session(model_path):
    import contextlib

    from cuda_host.hostlib import HostDevice

    class ArrayDevice(HostDevice):
        def adopt(self, x):
            return x if isinstance(x, DevArray) else None

        @contextlib.contextmanager
        def scope(self):
            yield _stand_in_xp()

        def clone(self, a):
            return DevArray(a.copy())

        def copy(self, dst, src):
            assert isinstance(src, DevArray) or isinstance(dst, np.ndarray)
            super().copy(dst, src.a if isinstance(src, DevArray) else src)

    sess = synapse_gpu.InferenceSession(model_path, device="cpu")
    sess._exe = cuda.CudaExecutable(sess.graph, sess.report.traversal, dev=ArrayDevice())
    sess.device = "cuda"
    return sess


def test_float_device_feed_plumbing(array_device_session, host_session):
    sess = array_device_session
    x = images(3, seed=16)
    want = host_session.run_full(None, {"x": x})
    r = sess.run_full(None, {"x": DevArray(x)}, device_outputs=True)
    (y,) = r.outputs
    assert isinstance(y, DevArray) and y.dtype == np.float32
    np.testing.assert_array_equal(y.get(), want.outputs[0])
    assert r.digest == want.digest
    assert isinstance(r.int8_inputs["x"], DevArray)  # quantized on the device, kept there
    b = sess.io_binding()
    b.bind_input("x", "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
    b.bind_output("y", "cuda")
    sess.run_with_iobinding(b)
    assert isinstance(b.get_outputs()[0]._array, DevArray)
    np.testing.assert_array_equal(b.copy_outputs_to_cpu()[0], want.outputs[0])
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(synapse_gpu.errors.InputError, match="NaN"):
        sess.run(None, {"x": DevArray(x)})
