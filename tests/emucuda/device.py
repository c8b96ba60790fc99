"""The emulated CUDA device: kernels compiled for the host, memory, streams, launches.

- Kernels: a CUDA source is compiled with g++ as NVRTC sees it (prelude.h, no
  host headers, __CUDA_ARCH__ defined) and linked with runtime.cpp, which runs
  every thread of the launch geometry on cooperative fibers. Modules are cached
  by a hash of everything that goes into them, in memory and on disk (a fresh
  temporary folder per process, or $EMUCUDA_CACHE_DIR).
- Launches check what the driver checks (grid and block limits, shared memory:
  CUDADriverError CUDA_ERROR_INVALID_VALUE) and more: every argument must have
  exactly its parameter's declared size and kind (the driver would read an `int`
  parameter's 4 bytes out of an 8-byte value without complaint).
- Memory: each allocation sits between guard zones that are checked after every
  launch that could reach it, and starts poisoned (not zero), so a kernel that
  leaves an element unwritten is seen.
- Streams: work is queued per stream and runs only when something waits for it
  (a synchronize, a copy back to the host), in the order CUDA guarantees: a
  non-blocking stream is never ordered against the legacy default stream, so
  work issued on the wrong stream is not there when the right one is read.
- Stream capture (CUDA graphs): a capturing stream records its work instead of
  queueing it; Graph.launch queues the recorded work again, which reads the
  memory as it is then (no snapshot). What CUDA refuses during capture raises
  cudaErrorStreamCaptureUnsupported (a synchronize, a copy to or from pageable
  host memory) or cudaErrorStreamCaptureImplicit (the legacy stream waiting on a
  capturing one) and invalidates the capture; allocating during capture raises
  too (legal in CuPy's relaxed mode, but a graph replay would write into memory
  the pool has handed out again since).

$EMUCUDA_SANITIZE=address,undefined builds runtime and kernels with those
sanitizers (the process then needs the ASan runtime preloaded).
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from collections import deque
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CXX = shutil.which("g++")
DEFAULT_ARCH = 80
GUARD = 256  # bytes on each side of an allocation
GUARD_BYTE = 0xFD
POISON_BYTE = 0xCB  # fresh memory: int8 -53, never what a zeroing bug produces
ALIGN = 256  # cudaMalloc's alignment

# cuLaunchKernel's limits (every architecture the project targets).
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS = 1024
MAX_STATIC_SHARED = 48 * 1024


class EmulatorError(RuntimeError):
    """A fault the emulator detected: bad arguments, out-of-bounds writes, deadlock, trap."""


class CUDADriverError(RuntimeError):
    """What cupy.cuda.driver.CUDADriverError reports for the same call on a GPU."""


class CompileError(RuntimeError):
    """The source does not compile as NVRTC would see it (g++'s messages attached)."""


# ---------------------------------------------------------------- compiling

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
                     r'void\s+(\w+)\s*\(')

# Appended to each source: for every kernel, a trampoline that reads each argument
# at its declared type from the driver-style array of pointers, and the declared
# sizes and kinds (pointer or not) of its parameters, straight from the compiler.
_GLUE_HEAD = r"""
template <unsigned long... I> struct emu_seq {};
template <unsigned long N, unsigned long... I> struct emu_make_seq : emu_make_seq<N - 1, N - 1, I...> {};
template <unsigned long... I> struct emu_make_seq<0, I...> { typedef emu_seq<I...> type; };
template <typename T> struct emu_is_ptr { enum { value = 0 }; };
template <typename T> struct emu_is_ptr<T*> { enum { value = 1 }; };
template <typename... P, unsigned long... I>
inline void emu_invoke(void (*f)(P...), void** a, emu_seq<I...>) { f(*(P*)a[I]...); }
template <typename... P>
inline void emu_call(void (*f)(P...), void** a) {
    emu_invoke(f, a, typename emu_make_seq<sizeof...(P)>::type());
}
template <typename... P>
inline int emu_params(void (*)(P...), unsigned long* size, int* ptr) {
    const unsigned long s[] = {sizeof(P)..., 0};
    const int p[] = {emu_is_ptr<P>::value..., 0};
    for (unsigned long i = 0; i < sizeof...(P); ++i) size[i] = s[i], ptr[i] = p[i];
    return sizeof...(P);
}
"""
_GLUE_ONE = r"""
extern "C" __attribute__((visibility("default"))) void emu_call_{0}(void** a) {{ emu_call({0}, a); }}
extern "C" __attribute__((visibility("default"))) int emu_params_{0}(unsigned long* s, int* p) {{
    return emu_params({0}, s, p);
}}
"""


def kernel_names(code):
    return _KERNEL.findall(code)


SANITIZE = os.environ.get("EMUCUDA_SANITIZE", "")


def _sanitize_flags():
    return ([f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
            if SANITIZE else [])


def _flags():
    return ["-O2", "-fPIC", "-fvisibility=hidden", *_sanitize_flags()]


@functools.lru_cache(maxsize=None)
def _cache_dir():
    d = os.environ.get("EMUCUDA_CACHE_DIR")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)
    d = Path(tempfile.mkdtemp(prefix="emucuda_"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def _digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _run(cmd, what):
    if CXX is None:
        raise CompileError("g++ not found: the emulated device compiles kernels with it")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise CompileError(f"{what} did not compile:\n{p.stderr}")


def _atomic_output(path, build):
    """Build into a temporary name, then rename: parallel processes may share the cache."""
    if path.exists():
        return path
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    build(tmp)
    os.replace(tmp, path)
    return path


def _runtime_object():
    src = (HERE / "runtime.cpp").read_bytes()
    key = _digest(src, (HERE / "emu_abi.h").read_bytes(), _flags())
    obj = _cache_dir() / f"runtime-{key}.o"
    return _atomic_output(obj, lambda out: _run(
        [CXX, "-std=c++17", *_flags(), "-Wall", "-Wextra", "-I", str(HERE), "-c",
         str(HERE / "runtime.cpp"), "-o", str(out)], "emucuda runtime.cpp"))


def _nvrtc_options(options):
    """The g++ flags that stand for the NVRTC options that change what is compiled."""
    std, arch, defs = "-std=c++17", DEFAULT_ARCH, []
    for o in options:
        if o.startswith(("-std=", "--std=")):
            std = "-std=" + o.split("=", 1)[1]
        elif m := re.fullmatch(r"(?:-arch|--gpu-architecture)[= ](?:sm|compute)_(\d+)\w?", o):
            arch = int(m.group(1))
        elif o.startswith(("-D", "-U")):
            defs.append(o)
    return [std, f"-D__CUDA_ARCH__={arch * 10}", *defs]


_loaded = {}


def compile_module(code, options=()):
    """Compile a CUDA source for the emulated device; a Module (cached by content)."""
    names = kernel_names(code)
    glue = _GLUE_HEAD + "".join(_GLUE_ONE.format(n) for n in names)
    opts = _nvrtc_options(options)
    key = _digest(code, glue, opts, _flags(), (HERE / "prelude.h").read_bytes(),
                  (HERE / "emu_abi.h").read_bytes(), (HERE / "runtime.cpp").read_bytes())
    if key in _loaded:
        return _loaded[key]
    d = _cache_dir()
    src = d / f"module-{key}.cu"
    if not src.exists():
        src.write_text(code + "\n" + glue)
    obj = _atomic_output(d / f"module-{key}.o", lambda out: _run(
        [CXX, *opts, *_flags(), "-nostdinc", "-include", str(HERE / "prelude.h"), "-x", "c++",
         "-c", str(src), "-o", str(out)], "the CUDA source"))
    so = _atomic_output(d / f"module-{key}.so", lambda out: _run(
        [CXX, "-shared", *_flags(), str(obj), str(_runtime_object()), "-o", str(out)],
        "the emulated module"))
    _loaded[key] = mod = Module(ctypes.CDLL(str(so)), names)
    return mod


class Module:
    def __init__(self, lib, names):
        self.lib, self.names = lib, tuple(names)
        lib.emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.emu_launch.restype = ctypes.c_int

    def kernel(self, name):
        if name not in self.names:
            raise CUDADriverError("CUDA_ERROR_NOT_FOUND: named symbol not found")
        return Kernel(self, name)


class Kernel:
    """A kernel with its parameters as the compiler declared them: (size, is pointer)."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.call = ctypes.cast(getattr(module.lib, f"emu_call_{name}"), ctypes.c_void_p).value
        sizes, ptrs = (ctypes.c_ulong * 256)(), (ctypes.c_int * 256)()
        n = getattr(module.lib, f"emu_params_{name}")(sizes, ptrs)
        self.params = [(sizes[i], bool(ptrs[i])) for i in range(n)]


# ---------------------------------------------------------------- memory

class Allocation:
    """Device memory: [guard][data, padded to ALIGN][guard], data poisoned at birth.

    Under $EMUCUDA_SANITIZE the data is instead an exact-size malloc, so that
    AddressSanitizer's own red zones sit right at its ends (reads are caught too).
    """

    def __init__(self, nbytes):
        self.nbytes = int(nbytes)
        if SANITIZE:
            self._raw = _libc().malloc(max(self.nbytes, 1))
            buf = (ctypes.c_uint8 * max(self.nbytes, 1)).from_address(self._raw)
            self.data = np.frombuffer(buf, np.uint8)[:self.nbytes]
            self.data[:] = POISON_BYTE
            self.ptr = self._raw
            return
        self.padded = -(-max(self.nbytes, 1) // ALIGN) * ALIGN
        self._buf = np.empty(2 * GUARD + self.padded + ALIGN, np.uint8)
        start = -self._buf.ctypes.data % ALIGN + GUARD
        self._buf[:] = GUARD_BYTE
        self.data = self._buf[start:start + self.nbytes]
        self.data[:] = POISON_BYTE
        self._before = self._buf[start - GUARD:start]
        self._after = self._buf[start + self.nbytes:start + self.padded + GUARD]
        self.ptr = self.data.ctypes.data

    def __del__(self):
        if SANITIZE and getattr(self, "_raw", None):
            _libc().free(self._raw)

    def check_guards(self, culprit):
        if SANITIZE:
            return
        for zone, where in ((self._before, "before"), (self._after, "past the end of")):
            bad = np.flatnonzero(zone != GUARD_BYTE)
            if bad.size:
                raise EmulatorError(f"{culprit} wrote {bad.size} byte(s) {where} an allocation of "
                                    f"{self.nbytes} bytes (guard zone)")


@functools.lru_cache(maxsize=None)
def _libc():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


# ---------------------------------------------------------------- streams

CAPTURE_UNSUPPORTED = "cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing"
CAPTURE_IMPLICIT = ("cudaErrorStreamCaptureImplicit: operation would make the legacy stream "
                    "depend on a capturing blocking stream")
CAPTURE_INVALIDATED = ("cudaErrorStreamCaptureInvalidated: operation failed due to a previous "
                       "error during capture")
ILLEGAL_STATE = "cudaErrorIllegalState: the operation cannot be performed in the present state"


class Stream:
    def __init__(self, device, non_blocking=False, legacy=False):
        self.device, self.non_blocking, self.legacy = device, non_blocking, legacy
        self.queue = deque()  # (sequence number, what, callable)
        self.captured = None  # while capturing: the recorded [(what, callable)]
        self.invalidated = False  # a refused operation during this capture
        device.streams.add(self)

    def synchronize(self):
        self.device.flush(self)

    # ------------------------------------------------------------ capture

    def refuse(self, message):
        """Raise the driver's capture error; like CUDA, it invalidates the capture."""
        self.invalidated = True
        raise CUDADriverError(message)

    def begin_capture(self):
        if self.legacy:
            raise RuntimeError("cannot capture on the default (legacy) stream")  # CuPy's check
        if self.captured is not None:
            raise CUDADriverError(ILLEGAL_STATE + " (the stream is capturing already)")
        self.captured, self.invalidated = [], False

    def end_capture(self):
        if self.captured is None:
            raise CUDADriverError(ILLEGAL_STATE + " (the stream is not capturing)")
        nodes, self.captured = self.captured, None
        if self.invalidated:
            raise CUDADriverError(CAPTURE_INVALIDATED)
        return Graph(nodes)


class Graph:
    """Recorded stream work; each launch queues it again on a stream, in order."""

    def __init__(self, nodes):
        self.nodes = tuple(nodes)

    def launch(self, stream):
        for what, fn in self.nodes:
            stream.device.enqueue(stream, what, fn)
        stream.device.graph_launches += 1


class Device:
    """One emulated GPU: its streams and the launches queued on them."""

    def __init__(self, arch=DEFAULT_ARCH):
        self.arch = arch
        self.streams = weakref.WeakSet()
        self.null = Stream(self, legacy=True)
        self.current = self.null
        self._seq = itertools.count()
        self.launches = deque(maxlen=100_000)  # (kernel, grid, block) as issued, for tests
        self.graph_launches = 0  # Graph.launch calls, for tests

    def enqueue(self, stream, what, fn):
        if stream.legacy:  # the legacy stream waits on every blocking stream
            for s in self.capturing():
                if not s.non_blocking:
                    s.refuse(CAPTURE_IMPLICIT)
        if stream.captured is not None:
            stream.captured.append((what, fn))
        else:
            stream.queue.append((next(self._seq), what, fn))

    def capturing(self):
        return [s for s in list(self.streams) if s.captured is not None]

    def _implicitly_ordered(self, stream):
        """The streams whose earlier work this stream's work waits for (legacy default stream)."""
        if stream.legacy:
            return [s for s in list(self.streams) if not s.non_blocking and s is not stream]
        return [] if stream.non_blocking else [self.null]

    def flush(self, stream, upto=None):
        """Run the stream's queued work (entries numbered below ``upto``), in order."""
        if stream.captured is not None and upto is None:  # a wait on a capture: never done
            stream.refuse(CAPTURE_UNSUPPORTED)
        while stream.queue and (upto is None or stream.queue[0][0] < upto):
            seq, what, fn = stream.queue[0]
            for other in self._implicitly_ordered(stream):
                self.flush(other, upto=seq)
            stream.queue.popleft()
            try:
                fn()
            except Exception:
                stream.queue.clear()  # like a sticky CUDA error, the rest never runs
                raise

    def synchronize(self):
        for s in self.capturing():  # cudaDeviceSynchronize would wait on the capture
            s.refuse(CAPTURE_UNSUPPORTED)
        for s in list(self.streams):
            self.flush(s)

    def launch(self, kernel, grid, block, args, shared_mem, stream, keep=()):
        try:
            self._launch(kernel, grid, block, args, shared_mem, stream, keep)
        except Exception:
            if stream.captured is not None:  # a failed call invalidates the capture
                stream.invalidated = True
            raise

    def _launch(self, kernel, grid, block, args, shared_mem, stream, keep):
        grid, block = _dims(grid), _dims(block)
        if (any(g < 1 or g > m for g, m in zip(grid, MAX_GRID))
                or any(b < 1 or b > m for b, m in zip(block, MAX_BLOCK))
                or block[0] * block[1] * block[2] > MAX_THREADS
                or not 0 <= shared_mem <= MAX_STATIC_SHARED):
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument (launch of "
                                  f"{kernel.name} with grid {grid}, block {block}, "
                                  f"shared_mem {shared_mem})")
        self.launches.append((kernel.name, grid, block))
        if len(args) != len(kernel.params):
            raise EmulatorError(f"{kernel.name} takes {len(kernel.params)} arguments, "
                                f"the launch passes {len(args)}")
        bufs, allocs = [], []
        for i, (a, (size, is_ptr)) in enumerate(zip(args, kernel.params)):
            raw, alloc = _argument_bytes(a)
            what = f"{kernel.name} argument {i}"
            if is_ptr != (alloc is not None):
                raise EmulatorError(f"{what}: the parameter is {'a' if is_ptr else 'not a'} "
                                    f"pointer, the launch passes {type(a).__name__}")
            if len(raw) != size:
                raise EmulatorError(f"{what}: the parameter is declared with {size} bytes, the "
                                    f"launch passes {len(raw)} ({type(a).__name__})")
            bufs.append(ctypes.create_string_buffer(raw, len(raw)))
            if alloc is not None:
                allocs.append(alloc)
        argv = (ctypes.c_void_p * max(1, len(bufs)))(*[ctypes.addressof(b) for b in bufs])
        g, b = (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block)
        lib = kernel.module.lib

        def run():
            err = ctypes.create_string_buffer(512)
            if lib.emu_launch(kernel.call, argv, g, b, err, len(err)):
                raise EmulatorError(f"{kernel.name}: {err.value.decode()}")
            for al in allocs:
                al.check_guards(f"kernel {kernel.name}")

        self.enqueue(stream, kernel.name, _holding(run, bufs, keep))


def _holding(fn, *objs):
    """fn, keeping objs alive as long as fn is queued."""
    def run():
        return fn()
    run.objs = objs
    return run


def _dims(d):
    d = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(d) <= 3:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument (dimensions {d})")
    return tuple(int(v) for v in d) + (1,) * (3 - len(d))


def _argument_bytes(a):
    """(bytes the launch passes, the allocation if it is a device pointer), as CuPy packs:
    device arrays by address, numpy scalars at their size, int as int64, float as float64."""
    alloc = getattr(a, "_emucuda_allocation", None)
    if alloc is not None:
        return a._emucuda_pointer().to_bytes(8, "little"), alloc
    if isinstance(a, np.generic):
        return a.tobytes(), None
    if isinstance(a, bool):
        return np.bool_(a).tobytes(), None
    if isinstance(a, int):
        return np.int64(a).tobytes(), None
    if isinstance(a, float):
        return np.float64(a).tobytes(), None
    raise EmulatorError(f"a kernel argument of type {type(a).__name__} is not supported")
