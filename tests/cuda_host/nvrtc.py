"""NVRTC through ctypes, without a GPU: compile CUDA sources as CuPy does.

The library comes from the `nvidia-cuda-nvrtc` wheel (the test extra installs
it), else a CUDA toolkit's lib64. cupy_options() is the option list CuPy's
RawModule hands NVRTC for a device of a given architecture: the caller's options,
then -ftz=true, then --gpu-architecture=sm_XX (CuPy compiles straight to a cubin
when NVRTC can, so ptxas runs too).
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
import re
import sys

ARCHS = (75, 80, 90, 100, 120)


@functools.lru_cache(maxsize=None)
def library():
    """The loaded libnvrtc, or None where there is none."""
    candidates = []
    for site in sys.path:
        candidates += sorted(glob.glob(os.path.join(site, "nvidia", "cu1*", "lib", "libnvrtc.so*")))
        candidates += sorted(glob.glob(os.path.join(site, "nvidia", "cuda_nvrtc", "lib",
                                                    "libnvrtc.so*")))
    candidates += sorted(glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*"))
    for path in candidates:
        # NVRTC dlopens its builtins by soname; the wheel's folder is not on the loader's
        # path (torch's pinned nvidia-cuda-nvrtc 13.0 does not find them), so load them first.
        for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))):
            try:
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    return None


def version():
    major, minor = ctypes.c_int(), ctypes.c_int()
    library().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


def cupy_options(options, arch):
    return (*options, "-ftz=true", f"--gpu-architecture=sm_{arch}")


class Result:
    def __init__(self, ok, log, cubin):
        self.ok, self.log, self.cubin = ok, log, cubin


def compile_source(source, options, name="kern.cu"):
    """Compile with NVRTC; a Result with ok, the program log and the cubin (b'' if none)."""
    lib = library()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    if rc:
        raise RuntimeError(f"nvrtcCreateProgram: {lib.nvrtcGetErrorString(rc).decode()}")
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        ok = lib.nvrtcCompileProgram(prog, len(options), opts) == 0
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        cubin = b""
        if ok:
            lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetCUBIN(prog, buf)
            cubin = buf.raw
        return Result(ok, log.value.decode(errors="replace"), cubin)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


_FUNCTION = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_FIGURES = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "smem": re.compile(r"(\d+) bytes smem"),
}


def ptxas_figures(log):
    """{kernel: {registers, spill_stores, spill_loads, stack, smem}} from a log of a compile
    with --ptxas-options=-v (stack: local memory per thread, in bytes)."""
    out, current = {}, None
    for line in log.splitlines():
        if m := _FUNCTION.search(line):
            current = out.setdefault(m.group(1), {})
            continue
        if current is None:
            continue
        for key, rx in _FIGURES.items():
            if m := rx.search(line):
                current[key] = int(m.group(1))
    return out
