"""The CUDA kernels compiled for the host, and a device that runs the CUDA backend on them.

library() compiles every cuda_kernels/*.cu with host_compat.h (the __global__
kernels become extern "C" functions; a 1x1 grid visits every output) plus
harness.cpp (the requantization helpers over arrays) into one shared library,
once per test session, and loads it with ctypes. HostDevice implements the
device interface of synapse_gpu.backends.cuda.CudaExecutable with numpy arrays
and these functions, so the backend's lowering, argument packing, slots and
launch order run as they would on a GPU.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from synapse_gpu.backends.cuda import FAMILIES, kernel_signatures

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "cuda_kernels"
HARNESS = Path(__file__).resolve().parent / "harness.cpp"
CXX = shutil.which("g++")

_I64P = ctypes.POINTER(ctypes.c_int64)
_HELPERS = {  # harness.cpp
    "syn_bit_length_vec": [_I64P, ctypes.c_int64, _I64P],
    "syn_round_shift_vec": [_I64P, _I64P, ctypes.c_int64, _I64P],
    "syn_round_to_24_bits_vec": [_I64P, ctypes.c_int64, _I64P],
    "syn_scale_by_pow2_vec": [_I64P, _I64P, ctypes.c_int64, _I64P],
    "syn_requant_vec": [_I64P] * 6 + [ctypes.c_int64, ctypes.c_void_p],
    "syn_round_shift_zp_vec": [_I64P, _I64P, _I64P, ctypes.c_int64, _I64P],
    "syn_requant_zp_inside_vec": [_I64P] * 6 + [ctypes.c_int64, ctypes.c_void_p],
}


@functools.lru_cache(maxsize=None)
def library():
    """Build (once per process) and load the host library; returns the ctypes CDLL."""
    out = Path(tempfile.mkdtemp(prefix="synapse_host_"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    so = out / "libsynapse_host.so"
    cmd = [CXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
           "-include", str(KERNELS / "host_compat.h"), "-I", str(KERNELS), "-x", "c++",
           *[str(KERNELS / f"{f}.cu") for f in FAMILIES], str(HARNESS), "-o", str(so)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(so))
    for name, (_, kinds) in kernel_signatures().items():
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_int64 if k == "i64" else ctypes.c_void_p for k in kinds]
        fn.restype = None
    for name, argtypes in _HELPERS.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = None
    return lib


class HostDevice:
    """CudaExecutable's device interface on the host: numpy memory, host-compiled kernels.

    Fresh slots are filled with a marker byte rather than zeros, so that a kernel that
    fails to write an element is caught by the comparison with the reference.
    """

    name = "host"

    def __init__(self, lib=None):
        self.lib = lib or library()

    def kernel(self, name):
        return getattr(self.lib, name)

    def empty(self, n):
        return np.full(n, 0x5A, dtype=np.int8)

    def upload(self, a):
        return np.array(a, copy=True, order="C")

    def launch(self, fn, n, args):
        fn(*[a.ctypes.data if isinstance(a, np.ndarray) else int(a) for a in args])

    def copy(self, dst, src):
        assert dst.shape == src.shape
        dst[...] = src

    def write(self, dst, a):
        assert dst.shape == a.shape and a.dtype == np.int8, (dst.shape, a.shape, a.dtype)
        dst[...] = a

    def read(self, src):
        return src.copy()

    def synchronize(self):
        pass
