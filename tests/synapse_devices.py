"""Device fixtures: `device` for tests that must hold on every backend ("cpu", and "cuda"
on a GPU if there is one, else on the emulated device, tests/emucuda); `gpu` (module-wide,
autouse where imported) for the GPU suites."""
import os

import pytest

from synapse_gpu.backends import cuda


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cpu":
        yield "cpu"
        return
    if cuda.is_available()[0]:
        yield "cuda"
        return
    standin = pytest.importorskip("emucuda.cupy_standin")
    with standin.installed():
        yield "cuda"


@pytest.fixture(scope="module", autouse=True)
def gpu():
    """A real GPU if there is one (unless SYNAPSE_GPU_TESTS=emulated), else the emulator."""
    if os.environ.get("SYNAPSE_GPU_TESTS") != "emulated":
        ok, reason = cuda.is_available()
        if ok:
            yield reason
            return
    from emucuda import cupy_standin

    with cupy_standin.installed():
        ok, reason = cuda.is_available()
        assert ok, reason
        yield reason
