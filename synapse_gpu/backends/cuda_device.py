"""CUDA backend, the device: CuPy, memory, one stream, launches.

CupyDevice is the interface CudaExecutable drives (kernel, empty, upload, launch,
copy, write, read, synchronize; capture and replay for CUDA graphs, where
graph_support() says None); every call that touches the GPU goes through it,
in order on its one stream. Tests run the same class on the emulated device
(tests/emucuda: a `cupy` stand-in), and other code may hand it device arrays of
its own (upload/read/empty are the seam). CuPy is imported lazily.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time

from ..arrays import on_gpu
from ..errors import DeviceError
from .cuda_source import NVRTC_OPTIONS, kernel_signatures, kernel_source

BLOCK = 256  # threads per block; one thread per output element
MAX_GRID_X = 2**31 - 1  # cuLaunchKernel's limit on gridDim.x (every architecture since sm_30)
INSTALL_HINT = ("install CuPy for your CUDA version: pip install 'synapse-gpu[cuda12]' "
                "(CUDA 12.x) or 'synapse-gpu[cuda13]' (CUDA 13.x)")


def grid_for(n):
    """Blocks for n threads: ceil(n / BLOCK), at least 1 (a caller skips n = 0)."""
    return (n + BLOCK - 1) // BLOCK


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise DeviceError(f"CuPy is not installed ({e}); {INSTALL_HINT}") from None
    except Exception as e:  # e.g. a CUDA library that fails to load
        raise DeviceError(f"CuPy failed to import ({type(e).__name__}: {e}); reinstall it "
                          f"for the machine's CUDA version: {INSTALL_HINT}") from None
    return cupy


def is_available():
    """(True, device description) or (False, the reason), without raising."""
    try:
        cp = _cupy()
    except DeviceError as e:
        return False, str(e)
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, driver too old, broken install
        return False, (f"the CUDA driver/runtime does not answer ({type(e).__name__}: {e}); "
                       "check nvidia-smi and that the CuPy package matches the CUDA version")
    if n == 0:
        return False, "no CUDA device found (CuPy is installed, the driver reports 0 GPUs)"
    try:
        dev = cp.cuda.Device()
        name = cp.cuda.runtime.getDeviceProperties(dev.id)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return True, f"GPU {dev.id}: {name} (compute capability {dev.compute_capability})"
    except Exception as e:
        return False, f"CUDA device query failed ({type(e).__name__}: {e})"


def require():
    """Raise DeviceError naming what is missing unless a CUDA device is usable."""
    ok, reason = is_available()
    if not ok:
        raise DeviceError(f"the CUDA backend cannot run: {reason}")
    return reason


# (cupy module, device id, source text) -> cupy.RawModule: a changed source or another
# `cupy` (the tests' emulated one) never gets a stale module.
_modules = {}
_modules_lock = threading.Lock()


class CupyDevice:
    """The device interface of CudaExecutable, on the current CuPy device and one stream."""

    name = "cuda"

    def __init__(self, verbose=False, device_id=None):
        self.description = require()
        self.cp = _cupy()
        n = self.cp.cuda.runtime.getDeviceCount()
        if device_id is not None and not 0 <= device_id < n:
            raise DeviceError(f"device_id={device_id}: this machine has {n} GPU(s)")
        make = self.cp.cuda.Device  # no argument: CuPy's current device
        self.device = make() if device_id is None else make(device_id)
        self.stream = self.cp.cuda.Stream(non_blocking=True)
        self.verbose = verbose

    def _module(self, family):
        code = kernel_source(family)
        key = (id(self.cp), self.device.id, code)
        with _modules_lock:
            if key not in _modules:
                t0 = time.perf_counter()
                with self.device:
                    try:
                        # No -arch option: CuPy picks the device's own and keys its
                        # disk cache on it (and on the inlined source text).
                        mod = self.cp.RawModule(code=code, options=NVRTC_OPTIONS)
                        mod.compile()
                    except Exception as e:
                        raise DeviceError(
                            f"cuda_kernels/{family}.cu did not compile or load for "
                            f"{self.description}: {type(e).__name__}: {e}") from None
                _modules[key] = mod
                if self.verbose:
                    print(f"synapse: compiled cuda_kernels/{family}.cu for GPU {self.device.id} "
                          f"in {time.perf_counter() - t0:.3f} s (first run; then cached by CuPy)")
            return _modules[key]

    def kernel(self, name):
        mod = self._module(kernel_signatures()[name][0])
        with self.device:
            return mod.get_function(name)

    def empty(self, n):
        with self.device, self.stream:
            return self.cp.empty(n, dtype=self.cp.int8)

    def upload(self, a):
        with self.device, self.stream:
            return self.cp.asarray(a)

    def launch(self, fn, n, args):
        if n == 0:  # an empty tensor: the driver rejects a zero-size grid
            return
        grid = grid_for(n)
        if grid > MAX_GRID_X:  # the driver's answer would be a bare CUDA_ERROR_INVALID_VALUE
            raise DeviceError(f"kernel {getattr(fn, 'name', fn)}: {n} outputs need {grid} blocks "
                              f"of {BLOCK} threads, over the driver's grid limit of {MAX_GRID_X}; "
                              "run a smaller batch")
        with self.device, self.stream:
            fn((grid,), (BLOCK,), args)

    def copy(self, dst, src):
        with self.device, self.stream:
            dst[...] = src  # an elementwise copy kernel, in stream order

    def write(self, dst, a):
        dst.set(a, stream=self.stream)

    def read(self, src):
        return src.get(stream=self.stream)

    def synchronize(self):
        self.stream.synchronize()

    # CUDA graphs: the launches of issue() recorded once, then replayed by one call.

    def graph_support(self):
        """None if this CuPy can capture the stream into a CUDA graph, else why not."""
        if not (hasattr(self.cp.cuda, "Graph") and hasattr(self.stream, "begin_capture")):
            return f"CuPy {self.cp.__version__} has no stream capture (CuPy 10 or later has)"
        if getattr(self.cp.cuda.runtime, "is_hip", False):
            return "CuPy on ROCm: stream capture is CUDA only"
        return None

    def capture(self, issue):
        """A cupy.cuda.Graph of the work issue() puts on the stream (recorded, not run)."""
        with self.device, self.stream:
            self.stream.begin_capture()
            try:
                issue()
            except BaseException:
                with contextlib.suppress(Exception):  # an invalidated capture: raise issue()'s error
                    self.stream.end_capture()
                raise
            return self.stream.end_capture()

    def replay(self, graph):
        """The captured work, in stream order: it reads the buffers as they are now."""
        with self.device:
            graph.launch(stream=self.stream)

    # Arrays the caller holds on the GPU (synapse_gpu/arrays.py: onnxruntime-style device
    # feeds, device outputs, IO binding to raw pointers).

    @property
    def device_id(self):
        return self.device.id

    def adopt(self, x):
        """x as an array of this device without a host copy, if x lives on a GPU (a CuPy
        array, anything with __cuda_array_interface__ or a CUDA __dlpack__); else None."""
        if isinstance(x, self.cp.ndarray):
            self.cp.cuda.get_current_stream().synchronize()  # the caller's work on x is done
        elif on_gpu(x):
            with self.device, self.stream:  # DLPack: the producer orders itself before us
                x = self.cp.from_dlpack(x) if hasattr(x, "__dlpack__") else self.cp.asarray(x)
        else:
            return None
        on = getattr(getattr(x, "device", None), "id", self.device.id)
        if on != self.device.id:
            raise DeviceError(f"an input is on GPU {on}; this session runs on GPU {self.device.id}")
        return x

    @contextlib.contextmanager
    def scope(self):
        """CuPy, with this device and stream current (the boundary quantize of GPU feeds)."""
        with self.device, self.stream:
            yield self.cp

    def clone(self, a):
        """A new device array with a's values, in stream order (a device output: the slot
        is reused by the next run)."""
        with self.device, self.stream:
            out = self.cp.empty(a.shape, a.dtype)
            out[...] = a
            return out

    def wrap_pointer(self, ptr, shape, dtype, device_id):
        """A CuPy view of memory the caller owns (onnxruntime's buffer_ptr)."""
        if device_id != self.device.id:
            raise DeviceError(f"buffer on GPU {device_id}; this session runs on GPU {self.device.id}")
        nbytes = math.prod(shape) * self.cp.dtype(dtype).itemsize
        mem = self.cp.cuda.UnownedMemory(ptr, nbytes, None, device_id)
        return self.cp.ndarray(shape, dtype, self.cp.cuda.MemoryPointer(mem, 0))
