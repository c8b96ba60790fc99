"""The CUDA backend's host side, checked without a GPU.

Kernel names and signatures against the op table, the argument packing of every
op against the parsed .cu signatures, the lazy CuPy import, the DeviceError
messages, and CupyDevice's calls (compiles memoized, verbose notices, launch
geometry, errors) through a minimal stand-in `cupy` whose kernels are the
host-compiled ones. Bit-exactness on a device, streams and the real launch
geometry are test_cuda_gpu.py's (a GPU, or the emulated device of tests/emucuda).
"""
import subprocess
import sys
import types

import numpy as np
import pytest

from synapse_gpu import backends
from synapse_gpu.backends import cuda, cuda_device, cuda_variants
from synapse_gpu.errors import DeviceError, DtypeError
from synapse_gpu.opdefs import OPS

from cuda_host import cases
from cuda_host.hostlib import library

COPY_OPS = {"flatten", "reshape", "identity"}


def test_import_does_not_import_cupy():
    code = ("import sys, synapse_gpu, synapse_gpu.backends.cuda as c; c.kernel_signatures(); "
            "c.is_available(); import synapse_gpu.backends as b; b.cuda_status(); "
            "assert 'cupy' not in sys.modules or c.is_available()[0], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys, synapse_gpu.backends.cuda, synapse_gpu.backends.cpu; "
            "assert 'cupy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError


def test_is_available_names_the_missing_package(no_cupy):
    ok, reason = cuda.is_available()
    assert not ok
    assert "CuPy is not installed" in reason and "synapse-gpu[cuda12]" in reason


def test_cupy_that_fails_to_load_is_reported(monkeypatch):
    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "cupy":
                raise OSError("libcudart.so.12: cannot open shared object file")

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    ok, reason = cuda.is_available()
    assert not ok and "CuPy failed to import" in reason and "libcudart" in reason


def test_prepare_and_select_raise_device_error(no_cupy):
    graph, _ = cases.op_case("relu", 0, 0)
    with pytest.raises(DeviceError, match=r"CuPy is not installed.*pip install"):
        cuda.prepare(graph, cases.traversal(graph))
    with pytest.raises(DeviceError, match="CuPy is not installed"):
        backends.select("cuda")


def test_every_op_has_a_lowering_and_every_kernel_an_op():
    assert set(cuda.LOWER) == set(OPS)
    sigs = cuda.kernel_signatures()
    v1 = {k for k in sigs if k.endswith("_v1")}
    assert set(sigs) - v1 == cuda_variants.KERNELS  # the numbered conv/dense variants
    ops_with_kernels = {k[:-3] for k in v1 - {cuda_variants.TO_NHWC, cuda_variants.TO_NCHW}}
    assert ops_with_kernels == set(OPS) - COPY_OPS
    for op in ops_with_kernels:  # one op, one name: reference function, kernel, registry key
        from synapse_gpu import registry

        assert callable(registry.reference_op(op))


@pytest.mark.parametrize("family", cuda.FAMILIES)
def test_kernel_source_inlines_the_header(family):
    src = cuda.kernel_source(family)
    assert "#include" not in src
    assert src.count("#define SYNAPSE_INT_CUH") == 1
    assert "syn_requant" in src
    raw = (cuda._kernel_files() / f"{family}.cu").read_text()
    assert raw.count('#include "synapse_int.cuh"') == 1


@pytest.mark.parametrize("name,zx,zy", [p.values for p in cases.op_params()][::6])
def test_packing_matches_signature_for_every_case(name, zx, zy):
    graph, _ = cases.op_case(name, zx, zy)
    trav = cases.traversal(graph)
    shapes = {t: cuda.concrete(s, 4) for t, s in trav.shapes.items()}
    node = trav.order[0]
    steps = cuda.lower(node, shapes, graph.buffers)  # runs check_launch
    assert steps
    sigs = cuda.kernel_signatures()
    for s in steps:
        if isinstance(s, cuda.Copy):
            assert node.op in COPY_OPS
            continue
        kinds = sigs[s.kernel][1]
        assert len(s.args) == len(kinds)
        assert [a for a in s.args if isinstance(a, cuda.Act) and a.name == node.outputs[0]] \
            == [cuda.Act(node.outputs[0])]
        assert all(isinstance(a, int) for a, k in zip(s.args, kinds) if k == "i64")


def test_check_launch_rejects_wrong_packing():
    graph, _ = cases.op_case("conv_2d_3x3_same", 0, 0)
    node = graph.nodes[0]
    shapes = {t: cuda.concrete(s, 2) for t, s in cases.traversal(graph).shapes.items()}
    (good,) = cuda.lower(node, shapes, graph.buffers)
    y = node.outputs[0]
    bad = [good.args[:-1],  # one scalar short
           (good.args[0], cuda.Param(node.params["w"], "int32"), *good.args[2:]),  # wrong dtype
           (cuda.Act(y), *good.args[1:6], cuda.Act(node.inputs[0]), *good.args[7:])]  # in/out swapped
    for args in bad:
        with pytest.raises(RuntimeError, match="conv2d_v1 takes"):
            cuda.check_launch(cuda.Launch(good.kernel, good.n, args), y)


def test_parameter_outside_the_kernel_type_is_rejected():
    from cuda_host.hostlib import HostDevice

    graph, feeds = cases.op_case("conv_2d_1x1", 0, 0)
    trav = cases.traversal(graph)  # the load-time proof would reject it first; past it:
    node = graph.nodes[0]
    graph.buffers[node.params["w_zero_point"]] = np.full(3, 1 << 40, np.int64)
    with pytest.raises(DtypeError, match="outside int32"):
        cuda.CudaExecutable(graph, trav, dev=HostDevice())


# ------------------------------------------------------------------ CupyDevice on a stand-in cupy

class _FakeArray(np.ndarray):
    def set(self, a, stream=None):
        assert stream is not None and self.shape == a.shape and a.dtype == self.dtype
        self[...] = a

    def get(self, stream=None):
        assert stream is not None
        return np.array(self)


class _Ctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_cupy(n_devices=1, compile_error=None):
    """A `cupy` module with just what CupyDevice uses; kernels are the host-compiled ones."""
    lib = library()
    cp = types.ModuleType("cupy")
    cp.int8 = np.int8
    cp.log = []

    def asarray(a):
        return np.array(a, copy=True).view(_FakeArray)

    cp.asarray = asarray
    cp.empty = lambda n, dtype: np.empty(n, dtype).view(_FakeArray)

    class Device(_Ctx):
        def __init__(self, i=0):
            self.id = i
            self.compute_capability = "90"

    class Stream(_Ctx):
        def __init__(self, non_blocking=False):
            assert non_blocking

        def synchronize(self):
            cp.log.append(("sync",))

    class RawModule:
        def __init__(self, code, options=()):
            assert "-std=c++17" in options and not any("arch" in o for o in options)
            assert "#include" not in code
            self.code, self.compiled = code, 0

        def compile(self):
            if compile_error:
                raise RuntimeError(compile_error)
            self.compiled += 1
            cp.log.append(("compile", self.code[:40]))

        def get_function(self, name):
            assert self.compiled == 1 and f"void {name}(" in self.code
            fn = getattr(lib, name)

            def launch(grid, block, args):
                assert all(not isinstance(a, int) for a in args), "scalars must be numpy int64"
                assert all(isinstance(a, (np.ndarray, np.int64)) for a in args)
                cp.log.append(("launch", name, grid, block))
                fn(*[a.ctypes.data if isinstance(a, np.ndarray) else int(a) for a in args])
            return launch

    runtime = types.SimpleNamespace(getDeviceCount=lambda: n_devices,
                                    getDeviceProperties=lambda i: {"name": b"Fake GPU"})
    cp.cuda = types.SimpleNamespace(runtime=runtime, Device=Device, Stream=Stream)
    cp.RawModule = RawModule
    return cp


@pytest.fixture
def fake(monkeypatch):
    def install(**kw):
        cp = fake_cupy(**kw)
        monkeypatch.setitem(sys.modules, "cupy", cp)
        monkeypatch.setattr(cuda_device, "_modules", {})
        return cp
    return install


def test_fake_device_runs_a_model_bit_exactly(fake, capsys, monkeypatch):
    cp = fake()
    monkeypatch.setenv("SYNAPSE_VERBOSE", "1")
    assert cuda.is_available() == (True, "GPU 0: Fake GPU (compute capability 90)")
    graph, feeds = cases.model_case("kitchen_sink")
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav)
    out, steps = exe.run(feeds, trace=True)
    want = cases.reference_run(graph, trav, feeds)
    for t in graph.outputs:
        np.testing.assert_array_equal(out[t.name], want[t.name])
    assert [s[1] for s in steps] == [n.outputs[0] for n in trav.order]
    compiles = [e for e in cp.log if e[0] == "compile"]
    assert len(compiles) == len({cuda.kernel_signatures()[k][0] for n in trav.order
                                 for k in cuda.kernel_signatures() if k == f"{n.op}_v1"})
    printed = capsys.readouterr().out
    assert printed.count("synapse: compiled cuda_kernels/") == len(compiles)
    for e in cp.log:
        if e[0] == "launch":
            assert e[3] == (cuda.BLOCK,)
    assert cp.log[-1] == ("sync",)
    exe2 = cuda.prepare(graph, trav, verbose=False)  # modules are memoized per device
    exe2.run(feeds)
    assert len([e for e in cp.log if e[0] == "compile"]) == len(compiles)


def test_fake_device_grid_covers_every_output(fake):
    cp = fake()
    graph, feeds = cases.op_case("relu", 0, 0)
    exe = cuda.prepare(graph, cases.traversal(graph))
    for batch in (1, 3, 200):
        cp.log.clear()
        x = np.random.default_rng(batch).integers(-128, 128, (batch, 3, 4, 5)).astype(np.int8)
        out, _ = exe.run({"x0": x})
        np.testing.assert_array_equal(out[graph.outputs[0].name], np.maximum(x, 0))
        (launch,) = [e for e in cp.log if e[0] == "launch"]
        n = x.size
        assert launch[2] == ((n + cuda.BLOCK - 1) // cuda.BLOCK,)


def test_no_gpu_and_compile_failure_raise_device_error(fake):
    fake(n_devices=0)
    ok, reason = cuda.is_available()
    assert not ok and "no CUDA device" in reason
    graph, _ = cases.op_case("relu", 0, 0)
    with pytest.raises(DeviceError, match="no CUDA device"):
        cuda.prepare(graph, cases.traversal(graph))
    fake(compile_error="nvrtc: error: bad")
    with pytest.raises(DeviceError, match=r"elementwise\.cu did not compile.*nvrtc: error: bad"):
        cuda.prepare(graph, cases.traversal(graph))


def test_broken_driver_is_reported(fake):
    cp = fake()

    def broken():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
    cp.cuda.runtime.getDeviceCount = broken
    ok, reason = cuda.is_available()
    assert not ok and "driver" in reason and "insufficient" in reason
