"""A `device` fixture for tests that must hold on every backend: "cpu", and "cuda" on a
GPU if there is one, else on the emulated device (tests/emucuda)."""
import pytest


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cpu":
        yield "cpu"
        return
    from synapse_gpu.backends import cuda

    if cuda.is_available()[0]:
        yield "cuda"
        return
    standin = pytest.importorskip("emucuda.cupy_standin")
    with standin.installed():
        yield "cuda"
