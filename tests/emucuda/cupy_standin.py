"""A `cupy` module on the emulated device: exactly what the project's CUDA code uses.

install() puts it in sys.modules as `cupy` (and `cupy.cuda`), so
synapse_gpu.backends runs unchanged: RawModule / get_function / kernel calls,
Device, Stream (current-stream context managers, non_blocking), ndarray views
(1-D slices, reshape), empty / zeros / asarray, get / set / `a[...] = b` in
stream order, stream capture into a cupy.cuda.Graph (begin_capture, end_capture,
is_capturing, Graph.launch), runtime device queries, and CuPy's exception types. Anything else
raises AttributeError: a new use must be added here on purpose.
"""
from __future__ import annotations

import contextlib
import math
import sys
import types

import numpy as np

from . import device as emu

_DEV = emu.Device()


class CompileException(Exception):
    pass


# ---------------------------------------------------------------- arrays

class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


class ndarray:
    """A C-contiguous device array: an allocation, a byte offset, a shape and a dtype."""

    def __init__(self, shape, dtype, _alloc=None, _offset=0):
        self.shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        self.dtype = np.dtype(dtype)
        if _alloc is None and _DEV.capturing():
            raise emu.CUDADriverError("emucuda: a device allocation during stream capture (a "
                                      "graph replay would write into memory reused since)")
        self._emucuda_allocation = _alloc or emu.Allocation(self.nbytes)
        self._offset = _offset

    size = property(lambda self: math.prod(self.shape))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)
    ndim = property(lambda self: len(self.shape))
    data = property(lambda self: _Pointer(self._emucuda_pointer()))

    def _emucuda_pointer(self):
        return self._emucuda_allocation.ptr + self._offset

    def _host(self):
        """The bytes behind this array, as numpy (for the queued copies only)."""
        raw = self._emucuda_allocation.data[self._offset:self._offset + self.nbytes]
        return raw.view(self.dtype).reshape(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if self.ndim != 1 or not isinstance(key, slice) or key.step not in (None, 1):
            raise NotImplementedError("emucuda ndarray: only 1-D slices with step 1")
        start, stop, _ = key.indices(self.shape[0])
        n = max(0, stop - start)
        return ndarray((n,), self.dtype, self._emucuda_allocation,
                       self._offset + start * self.dtype.itemsize)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = tuple(int(s) for s in shape)
        if shape.count(-1) == 1:
            known = math.prod(s for s in shape if s != -1)
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
        return ndarray(shape, self.dtype, self._emucuda_allocation, self._offset)

    def __setitem__(self, key, value):
        if key is not Ellipsis and key != slice(None):
            raise NotImplementedError("emucuda ndarray: only a[...] = b")
        if isinstance(value, ndarray):
            if value.shape != self.shape or value.dtype != self.dtype:
                raise ValueError(f"copy of {value.shape} {value.dtype} into {self.shape} {self.dtype}")
            _DEV.enqueue(_DEV.current, "copy", lambda: self._host().__setitem__(..., value._host()))
        else:
            v = np.asarray(value, self.dtype)
            _DEV.enqueue(_DEV.current, "fill", lambda: self._host().__setitem__(..., v))

    def set(self, arr, stream=None):
        _refuse_pageable(stream)
        a = np.array(arr, copy=True)  # pageable host memory is staged at the call
        if a.shape != self.shape or a.dtype != self.dtype:
            raise ValueError(f"set of {a.shape} {a.dtype} into {self.shape} {self.dtype}")
        _DEV.enqueue(_queue(stream), "host to device",
                     lambda: self._host().__setitem__(..., a))

    def get(self, stream=None):
        _refuse_pageable(stream)
        s = _queue(stream)
        out = np.empty(self.shape, self.dtype)
        _DEV.enqueue(s, "device to host", lambda: out.__setitem__(..., self._host()))
        _DEV.flush(s)
        return out

    def __repr__(self):
        return f"emucuda.ndarray(shape={self.shape}, dtype={self.dtype})"


def _queue(stream):
    """The emulated stream behind a Stream argument (None: the current stream)."""
    return _DEV.current if stream is None else stream._s


def _refuse_pageable(stream):
    """A copy to or from pageable host memory cannot be captured into a graph."""
    s = _queue(stream)
    if s.captured is not None:
        s.refuse(emu.CAPTURE_UNSUPPORTED)


def empty(shape, dtype=np.float64):
    return ndarray(shape, dtype)


def zeros(shape, dtype=np.float64):
    a = ndarray(shape, dtype)
    a[...] = 0
    return a


def asarray(a, dtype=None):
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    h = np.ascontiguousarray(a, dtype=dtype)
    d = ndarray(h.shape, h.dtype)
    d.set(h)
    return d


def asnumpy(a, stream=None):
    return a.get(stream=stream) if isinstance(a, ndarray) else np.asarray(a)


# ---------------------------------------------------------------- kernels

class RawKernel:
    def __init__(self, code=None, name=None, options=(), *, _kernel=None):
        self._kernel = _kernel or RawModule(code=code, options=options).get_function(name)._kernel

    name = property(lambda self: self._kernel.name)

    def __call__(self, grid, block, args, *, shared_mem=0):
        _DEV.launch(self._kernel, grid, block, tuple(args), shared_mem, _DEV.current, keep=args)


class RawModule:
    def __init__(self, code=None, options=(), backend="nvrtc", **kwargs):
        if code is None or kwargs.get("path"):
            raise NotImplementedError("emucuda RawModule: only code=")
        self.code, self.options, self._mod = code, tuple(options), None

    def compile(self, log_stream=None):
        if self._mod is None:
            try:
                self._mod = emu.compile_module(self.code, self.options)
            except emu.CompileError as e:
                raise CompileException(str(e)) from None

    def get_function(self, name):
        self.compile()
        return RawKernel(_kernel=self._mod.kernel(name))


# ---------------------------------------------------------------- cuda

class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self._s = _DEV.null if null else emu.Stream(_DEV, non_blocking=non_blocking)
        self._prev = []

    def __enter__(self):
        self._prev.append(_DEV.current)
        _DEV.current = self._s
        return self

    def __exit__(self, *exc):
        _DEV.current = self._prev.pop()

    def synchronize(self):
        _DEV.flush(self._s)

    @property
    def ptr(self):
        return 0 if self._s is _DEV.null else id(self._s)

    def begin_capture(self, mode=None):
        self._s.begin_capture()  # mode: CuPy's default, relaxed, is what is emulated

    def end_capture(self):
        return Graph(self._s.end_capture())

    def is_capturing(self):
        return self._s.captured is not None


class Graph:
    """cupy.cuda.Graph: what a stream capture recorded, launched on any stream."""

    def __init__(self, graph):
        self._graph = graph

    def launch(self, stream=None):
        self._graph.launch(_queue(stream))


class Device:
    def __init__(self, device=None):
        if device not in (None, 0):
            raise emu.CUDADriverError("CUDA_ERROR_INVALID_DEVICE: invalid device ordinal")
        self.id = 0

    compute_capability = property(lambda self: str(_DEV.arch))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def synchronize(self):
        _DEV.synchronize()


def _get_current_stream():
    s = Stream.__new__(Stream)
    s._s, s._prev = _DEV.current, []
    return s


def _device_properties(device_id):
    Device(device_id)
    return {"name": f"emucuda (emulated sm_{_DEV.arch})".encode(), "major": _DEV.arch // 10,
            "minor": _DEV.arch % 10, "multiProcessorCount": 1, "l2CacheSize": 1 << 20,
            "totalGlobalMem": 1 << 34, "maxThreadsPerBlock": emu.MAX_THREADS,
            "sharedMemPerBlock": emu.MAX_STATIC_SHARED, "warpSize": 32}


def _module():
    cp = types.ModuleType("cupy", "emucuda: a CuPy stand-in on the emulated CUDA device")
    cuda = types.ModuleType("cupy.cuda")
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDeviceProperties=_device_properties,
        runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000,
        CUDARuntimeError=emu.CUDADriverError)
    driver = types.SimpleNamespace(CUDADriverError=emu.CUDADriverError)
    compiler = types.SimpleNamespace(CompileException=CompileException)
    cuda.__dict__.update(runtime=runtime, driver=driver, compiler=compiler, Stream=Stream,
                         Device=Device, Graph=Graph, get_current_stream=_get_current_stream)
    Stream.null = Stream(null=True)
    cp.__dict__.update(
        __version__="emucuda", cuda=cuda, ndarray=ndarray, RawKernel=RawKernel, RawModule=RawModule,
        empty=empty, zeros=zeros, asarray=asarray, asnumpy=asnumpy,
        **{t: getattr(np, t) for t in ("int8", "uint8", "int16", "int32", "int64", "uint32",
                                        "uint64", "float32", "float64", "dtype")})
    return cp


@contextlib.contextmanager
def installed():
    """`import cupy` gives the stand-in inside the block (restored after)."""
    saved = {k: sys.modules.get(k) for k in ("cupy", "cupy.cuda")}
    cp = _module()
    sys.modules["cupy"], sys.modules["cupy.cuda"] = cp, cp.cuda
    try:
        yield cp
    finally:
        _DEV.synchronize()
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def device():
    """The emulated device behind the stand-in (tests inspect its streams)."""
    return _DEV
