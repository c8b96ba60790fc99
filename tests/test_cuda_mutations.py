"""The GPU suite catches real GPU bugs, on the emulated device.

Each test plants one bug (in a copy of cuda_kernels/ or in the backend) and runs
checks of the GPU suite (tests/cuda_host/gpu_checks.py) on the emulated device:
they must fail. A correct kernel written in another style (bounds-checked
`if (i < n)` instead of a grid-stride loop) must pass the same checks: the suite
constrains what a kernel computes, not how it is written.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

from synapse_gpu.backends import cuda, cuda_device, cuda_lowering, cuda_source
from synapse_gpu.errors import DeviceError

from cuda_host import cases, gpu_checks
from emucuda import cupy_standin
from emucuda.device import CUDADriverError, EmulatorError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")

KERNELS = Path(__file__).resolve().parents[1] / "cuda_kernels"
FAILS = (AssertionError, EmulatorError, CUDADriverError, DeviceError)


@pytest.fixture(autouse=True)
def emulated():
    with cupy_standin.installed():
        yield


def _clear_source_caches():
    cuda_source.kernel_source.cache_clear()
    cuda_source.kernel_signatures.cache_clear()


@pytest.fixture
def mutate(tmp_path, monkeypatch):
    """mutate(file, old, new): the kernels as a copy of cuda_kernels/ with one edit."""
    tree = tmp_path / "cuda_kernels"
    shutil.copytree(KERNELS, tree)
    monkeypatch.setattr(cuda_source, "_kernel_files", lambda: tree)
    _clear_source_caches()

    def edit(name, old, new):
        path = tree / name
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} is not once in {name}"
        path.write_text(text.replace(old, new))
        _clear_source_caches()
    yield edit
    _clear_source_caches()


def _checks_fail(*checks):
    """Run each check; return how many raised one of the failures a test would report."""
    failed = 0
    for check in checks:
        try:
            check()
        except FAILS:
            failed += 1
    return failed


RELU_CASES = [lambda zx=zx: gpu_checks.check_op("relu", zx, zx + 1) for zx in (-128, 0, 100)]
CONCAT_CASES = [lambda name=name: gpu_checks.check_op(name, -37, 1)
                for name in ("concat_channels", "concat_last_axis", "concat_middle_axis")]


def test_unmutated_checks_pass(mutate):
    assert _checks_fail(*RELU_CASES, *CONCAT_CASES,
                        lambda: gpu_checks.check_model_trace("tiny_cnn", batch=37)) == 0


def test_clzll_truncated_to_int_is_caught(mutate):
    mutate("synapse_int.cuh", "return 64 - __clzll(v);", "return 64 - __clzll((int)v);")
    helpers = gpu_checks.Helpers()
    assert _checks_fail(lambda: gpu_checks.check_bit_length_and_rounding(helpers, n=10_000),
                        lambda: gpu_checks.check_requant(helpers, n=10_000),
                        lambda: gpu_checks.check_op("conv_2d_3x3_same", 0, 0)) == 3


def test_launches_off_the_backends_stream_are_caught(monkeypatch):
    def launch_on_default_stream(self, fn, n, args):
        if n:
            with self.device:  # the bug: no `self.stream`
                fn((cuda.grid_for(n),), (cuda.BLOCK,), args)

    monkeypatch.setattr(cuda_device.CupyDevice, "launch", launch_on_default_stream)
    assert _checks_fail(*RELU_CASES, lambda: gpu_checks.check_model_trace("tiny_cnn")) == 4


def test_grid_rounded_down_is_caught(monkeypatch):
    monkeypatch.setattr(cuda_device, "grid_for", lambda n: n // cuda.BLOCK)
    # grid-stride kernels still cover n >= 256 with fewer blocks; a single sample's
    # smaller tensors get grid (0,), which the driver rejects
    assert _checks_fail(lambda: gpu_checks.check_batch_invariance("tiny_cnn")) == 1


def test_launch_geometry_is_one_thread_per_output():
    """ceil(n / BLOCK) blocks of BLOCK threads: a grid-stride kernel would hide a smaller grid."""
    graph, feeds = cases.model_case("kitchen_sink", batch=37)
    exe = cuda.prepare(graph, cases.traversal(graph))
    log = cupy_standin.device().launches
    log.clear()
    exe.run(feeds)
    want = [(fn._kernel.name, (-(-n // cuda.BLOCK), 1, 1), (cuda.BLOCK, 1, 1))
            for todo in exe._plan.steps for kind, *step in todo if kind == "launch"
            for fn, n, _ in [step]]
    assert list(log) == want and len(want) >= 15


def test_grid_rounded_down_with_bounds_checked_kernel_is_caught(mutate, monkeypatch):
    _relu_in_bounds_checked_style(mutate)
    monkeypatch.setattr(cuda_device, "grid_for", lambda n: max(1, n // cuda.BLOCK))
    assert _checks_fail(*RELU_CASES) == 3


def test_concat_offset_off_by_one_is_caught(mutate):
    mutate("shape.cu", "y[i / part * width + offset + i % part]",
           "y[i / part * width + offset + 1 + i % part]")
    assert _checks_fail(*CONCAT_CASES) == 3


def test_int_parameter_given_64_bit_argument_is_caught(mutate, monkeypatch):
    signatures = cuda_source.kernel_signatures()  # as if the backend's parser let it pass
    mutate("elementwise.cu", "relu_v1(const i8* x, i8* y, i64 n, i64 x_zero_point)",
           "relu_v1(const i8* x, i8* y, i64 n, int x_zero_point)")
    for module in (cuda_lowering, cuda_device):
        monkeypatch.setattr(module, "kernel_signatures", lambda: signatures)
    with pytest.raises(EmulatorError, match="declared with 4 bytes, the launch passes 8"):
        gpu_checks.check_op("relu", 0, 0)


def test_one_unwritten_output_element_is_caught(mutate):
    mutate("elementwise.cu", "SYN_FOR_EACH_OUTPUT(i, n) y[i] = relu_output(x, i, x_zero_point);",
           "SYN_FOR_EACH_OUTPUT(i, n) if (i != n / 2) y[i] = relu_output(x, i, x_zero_point);")
    assert _checks_fail(*RELU_CASES) == 3


def _relu_in_bounds_checked_style(mutate):
    mutate("elementwise.cu", "SYN_FOR_EACH_OUTPUT(i, n) y[i] = relu_output(x, i, x_zero_point);",
           "const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;\n"
           "    if (i < n) y[i] = relu_output(x, i, x_zero_point);")


def test_bounds_checked_kernel_style_passes(mutate):
    _relu_in_bounds_checked_style(mutate)
    assert "if (i < n) y[i] = relu_output" in cuda_source.kernel_source("elementwise")
    assert _checks_fail(*RELU_CASES, lambda: gpu_checks.check_model_trace("tiny_cnn"),
                        lambda: gpu_checks.check_batch_invariance("tiny_cnn")) == 0


def test_empty_tensor_launches_nothing():
    """A zero-size grid is CUDA_ERROR_INVALID_VALUE: the device skips empty launches."""
    graph, _ = cases.op_case("relu", 0, 0)
    exe = cuda.prepare(graph, cases.traversal(graph))
    out, _ = exe.run({"x0": np.zeros((0, 3, 4, 5), np.int8)})
    assert out[graph.outputs[0].name].shape == (0, 3, 4, 5)
    fn = exe.kernel("relu_v1")
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        fn((0,), (cuda.BLOCK,), (exe.dev.empty(1), exe.dev.empty(1), np.int64(0), np.int64(0)))
