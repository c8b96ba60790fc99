"""CUDA backend: the kernels of cuda_kernels/ through CuPy, same bits as reference/.

prepare(graph, traversal) uploads every parameter once; CudaExecutable.run(feeds)
keeps the activations on the device in the core's planned slots, launches every
node on one stream and copies back only the graph outputs (and, with trace=True,
each node's output).

The work is split so that everything but the CuPy calls is testable without a GPU:
- lowering (`lower`): a node and its concrete shapes -> kernel launches whose
  arguments are symbolic (Act / Param / Table / int), in the kernel's parameter
  order (cuda_kernels/synapse_int.cuh gives the convention); `check_launch`
  verifies each launch against the signature parsed from the .cu source;
- the executable: slots, views, uploads and launches through a small device
  interface (`CupyDevice` here; tests/cuda_host runs the same kernels compiled
  for the host behind the same interface).

CuPy is imported lazily: importing this module never imports cupy.
"""
from __future__ import annotations

import functools
import importlib.resources
import math
import os
import re
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError, DtypeError, UnsupportedOpError
from ..reference.conv import resolve_pads

FAMILIES = ("conv", "dense", "elementwise", "pool", "shape", "softmax")
BLOCK = 256  # threads per block; one thread per output element
INSTALL_HINT = ("install CuPy for your CUDA version: pip install 'synapse-gpu[cuda12]' "
                "(CUDA 12.x) or 'synapse-gpu[cuda13]' (CUDA 13.x)")
_PAD_MODES = {"constant": 0, "edge": 1, "reflect": 2}  # SYN_PAD_* in shape.cu


# ---------------------------------------------------------------- kernel sources

_INCLUDE = re.compile(r'^#include "([^"]+)"[ \t]*$', re.M)
_KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
_PARAM_KINDS = {"i8*": "i8*", "int*": "i32*", "i64*": "i64*", "i64": "i64"}


def _kernel_files():
    return importlib.resources.files("synapse_gpu.cuda_kernels")


@functools.lru_cache(maxsize=None)
def kernel_source(family):
    """The family's .cu text with its local includes inlined (CuPy's disk cache keys
    on the source text, so a header change must change the text it compiles)."""
    files = _kernel_files()

    def inline(text, seen):
        def one(m):
            name = m.group(1)
            if name in seen:  # the header's guard would drop it anyway
                return ""
            return inline((files / name).read_text(encoding="utf-8"), seen | {name})
        return _INCLUDE.sub(one, text)

    return inline((files / f"{family}.cu").read_text(encoding="utf-8"), frozenset())


@functools.lru_cache(maxsize=None)
def kernel_signatures():
    """{kernel name: (family, [parameter kind...])} parsed from the .cu sources.

    Kinds: "i8*" / "i32*" / "i64*" (const input pointers), "out" (the one non-const
    pointer: int8 output), "i64" (a scalar).
    """
    sigs = {}
    for family in FAMILIES:
        for name, params in _KERNEL.findall(kernel_source(family)):
            kinds = []
            for p in params.split(","):
                words = p.replace("*", " * ").split()[:-1]  # drop the parameter name
                t = "".join(w for w in words if w != "const")
                if t not in _PARAM_KINDS:
                    raise ValueError(f"{family}.cu: {name}: unexpected parameter type {p.strip()!r}")
                kind = _PARAM_KINDS[t]
                kinds.append("out" if kind == "i8*" and "const" not in words else kind)
            sigs[name] = (family, kinds)
    return sigs


# ---------------------------------------------------------------- lowering

@dataclass(frozen=True)
class Act:
    """An activation tensor: a view of its slot (int8)."""
    name: str


@dataclass(frozen=True)
class Param:
    """A parameter buffer as the kernel's element type, uploaded once per executable."""
    buffer: str
    dtype: str  # "int8" | "int32" | "int64"


@dataclass(frozen=True)
class Table:
    """A small int64 table (shapes, strides), uploaded once per batch size."""
    values: tuple


@dataclass(frozen=True)
class Launch:
    kernel: str
    n: int  # threads = elements written
    args: tuple  # Act / Param / Table / int, in the kernel's parameter order


@dataclass(frozen=True)
class Copy:
    """flatten, reshape, identity: the bytes are already in row-major order."""
    src: str
    dst: str


_KIND_OF = {"int8": "i8*", "int32": "i32*", "int64": "i64*"}


def check_launch(launch, out):
    """Raise if a launch does not match its kernel's parameters (count, pointer types,
    and the output pointer receiving the node's output ``out``)."""
    sigs = kernel_signatures()
    if launch.kernel not in sigs:
        raise RuntimeError(f"no kernel {launch.kernel} in cuda_kernels/")
    family, kinds = sigs[launch.kernel]
    got = []
    for a in launch.args:
        if isinstance(a, Act):
            got.append("out" if a.name == out else "i8*")
        elif isinstance(a, Param):
            got.append(_KIND_OF[a.dtype])
        elif isinstance(a, Table):
            got.append("i64*")
        elif isinstance(a, (int, np.integer)) and not isinstance(a, bool):
            got.append("i64")
        else:
            raise RuntimeError(f"{launch.kernel}: argument {a!r} of unknown kind")
    if got != kinds:
        raise RuntimeError(f"{family}.cu: {launch.kernel} takes {kinds}, the backend packs {got}")


def concrete(shape, batch):
    """A planned shape with the batch (-1 on axis 0) replaced by the actual batch size."""
    return tuple(batch if i == 0 and d == -1 else int(d) for i, d in enumerate(shape))


def _row_major(shape):
    strides, s = [], 1
    for d in reversed(shape):
        strides.append(s)
        s *= d
    return strides[::-1]


def _broadcast_strides(shape, out, unit=1):
    """Strides (in elements, times ``unit``) of a tensor of ``shape`` along the axes of
    the numpy-broadcast ``out``: 0 where the tensor is broadcast or missing."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    return [0 if d == 1 else s * unit for d, s in zip(shape, _row_major(shape))]


def _qrange(a):
    return int(a.get("qmin", -128)), int(a.get("qmax", 127))


def _lower_conv(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs, ys, ws = S[x], S[y], P["w"].shape
    nd = len(xs) - 2
    strides = [int(v) for v in a.get("strides") or [1] * nd]
    dil = [int(v) for v in a.get("dilations") or [1] * nd]
    pads = resolve_pads(a.get("pads") or [0] * (2 * nd), xs[2:], ws[2:], strides, dil)
    return [Launch(f"conv{nd}d_v1", math.prod(ys), (
        Act(x), Param(node.params["w"], "int8"), Param(node.params["bias"], "int32"),
        Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"),
        Param(node.params["w_zero_point"], "int32"), Act(y),
        xs[0], xs[1], *xs[2:], ws[0], *ys[2:], *ws[2:], *strides, *pads[:nd], *dil,
        int(a.get("group", 1)), int(a["x_zero_point"]), int(a["y_zero_point"]), *_qrange(a)))]


def _lower_dense(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs, ys = S[x], S[y]
    return [Launch("dense_v1", math.prod(ys), (
        Act(x), Param(node.params["w"], "int8"), Param(node.params["bias"], "int32"),
        Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"),
        Param(node.params["w_zero_point"], "int32"), Act(y),
        math.prod(xs[:-1]), xs[-1], ys[-1], int(bool(a.get("trans_w", 0))),
        int(a["x_zero_point"]), int(a["y_zero_point"]), *_qrange(a)))]


def _lower_matmul(node, S, P):
    a, (ta, tb), (y,) = node.attrs, node.inputs, node.outputs
    sa, sb, ys = S[ta], S[tb], S[y]
    M, K, N = sa[-2], sa[-1], sb[-1]
    batch = ys[:-2]
    table = (*batch, *_broadcast_strides(sa[:-2], batch, M * K),
             *_broadcast_strides(sb[:-2], batch, K * N))
    return [Launch("matmul_v1", math.prod(ys), (
        Act(ta), Act(tb), Table(table), Act(y), math.prod(batch), len(batch), M, K, N,
        int(a["a_zero_point"]), int(a["b_zero_point"]), int(a["y_zero_point"]),
        int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _lower_requantize(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    return [Launch("requantize_v1", math.prod(S[y]), (
        Act(x), Act(y), math.prod(S[y]), int(a["x_zero_point"]), int(a["y_zero_point"]),
        int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _channels(shape):
    return shape[1], math.prod(shape[2:])  # C, elements per channel and sample


def _lower_batchnorm(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    return [Launch("batchnorm_v1", math.prod(S[y]), (
        Act(x), Param(node.params["scale"], "int8"), Param(node.params["bias"], "int32"),
        Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"), Act(y),
        math.prod(S[y]), *_channels(S[x]), int(a["x_zero_point"]), int(a["y_zero_point"]),
        *_qrange(a)))]


def _lower_relu(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    return [Launch("relu_v1", math.prod(S[y]), (
        Act(x), Act(y), math.prod(S[y]), int(node.attrs["x_zero_point"])))]


def _lower_clip(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    return [Launch("clip_v1", math.prod(S[y]), (
        Act(x), Act(y), math.prod(S[y]), *_qrange(node.attrs)))]


def _lower_prelu(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    return [Launch("prelu_v1", math.prod(S[y]), (
        Act(x), Param(node.params["slope"], "int8"), Param(node.params["multiplier"], "int64"),
        Param(node.params["shift"], "int64"), Act(y), math.prod(S[y]), *_channels(S[x]),
        int(a["x_zero_point"]), int(a["y_zero_point"]), int(a["pos_multiplier"]),
        int(a["pos_shift"]), *_qrange(a)))]


def _binary(node, S):
    (ta, tb), (y,) = node.inputs, node.outputs
    ys = S[y]
    table = (*ys, *_broadcast_strides(S[ta], ys), *_broadcast_strides(S[tb], ys))
    return (Act(ta), Act(tb), Table(table), Act(y), math.prod(ys), len(ys),
            int(node.attrs["a_zero_point"]), int(node.attrs["b_zero_point"]),
            int(node.attrs["y_zero_point"]))


def _lower_add(node, S, P):
    a = node.attrs
    return [Launch("add_v1", math.prod(S[node.outputs[0]]), (
        *_binary(node, S), int(a["a_multiplier"]), int(a["b_multiplier"]), int(a["shift"]),
        *_qrange(a)))]


def _lower_mul(node, S, P):
    a = node.attrs
    return [Launch("mul_v1", math.prod(S[node.outputs[0]]), (
        *_binary(node, S), int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _lower_lut(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    return [Launch("lut_v1", math.prod(S[y]), (
        Act(x), Param(node.params["table"], "int8"), Act(y), math.prod(S[y])))]


def _lower_softmax(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs = S[x]
    axis = int(a["axis"]) % len(xs)
    return [Launch("softmax_v1", math.prod(xs), (
        Act(x), Param(node.params["exp_table"], "int64"), Act(y), math.prod(xs), xs[axis],
        math.prod(xs[axis + 1:]), int(a["y_inv_scale"]), int(a["y_zero_point"]), *_qrange(a)))]


def _pool_geometry(node, S):
    """(N, C, D, H, W, OD, OH, OW, KD, KH, KW, strides, pad begins, pad ends, dilations):
    1-D and 2-D windows as 3-D ones with unit leading axes."""
    a, xs, ys = node.attrs, S[node.inputs[0]], S[node.outputs[0]]
    ks = [int(v) for v in a["kernel_shape"]]
    nd = len(ks)
    if nd > 3:
        raise UnsupportedOpError(f"node {node.name!r} (op {node.op}): {nd}-D pooling; the CUDA "
                                 "kernels take 1 to 3 spatial axes (use device='cpu')")
    lead = 3 - nd
    pads = [int(v) for v in a.get("pads") or [0] * (2 * nd)]

    def fill(v, unit):
        return [unit] * lead + [int(t) for t in v]

    return (xs[0], xs[1], *fill(xs[2:], 1), *fill(ys[2:], 1), *fill(ks, 1),
            *fill(a.get("strides") or [1] * nd, 1), *fill(pads[:nd], 0), *fill(pads[nd:], 0),
            *fill(a.get("dilations") or [1] * nd, 1))


def _lower_max_pool(node, S, P):
    g = _pool_geometry(node, S)
    return [Launch("max_pool_v1", math.prod(S[node.outputs[0]]), (
        Act(node.inputs[0]), Act(node.outputs[0]), *g[:17], *g[20:]))]  # no pad ends


def _lower_avg_pool(node, S, P):
    a = node.attrs
    return [Launch("avg_pool_v1", math.prod(S[node.outputs[0]]), (
        Act(node.inputs[0]), Param(node.params["multiplier"], "int64"),
        Param(node.params["shift"], "int64"), Act(node.outputs[0]), *_pool_geometry(node, S),
        int(bool(a.get("count_include_pad", 0))), int(a["x_zero_point"]),
        int(a["y_zero_point"]), *_qrange(a)))]


def _lower_global_avg_pool(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    xs = S[x]
    return [Launch("global_avg_pool_v1", xs[0] * xs[1], (
        Act(x), Act(y), xs[0] * xs[1], math.prod(xs[2:]), int(a["x_zero_point"]),
        int(a["y_zero_point"]), int(a["multiplier"]), int(a["shift"]), *_qrange(a)))]


def _lower_copy(node, S, P):
    return [Copy(node.inputs[0], node.outputs[0])]


def _lower_transpose(node, S, P):
    (x,), (y,) = node.inputs, node.outputs
    xstr = _row_major(S[x])
    perm = [int(p) for p in node.attrs["perm"]]
    table = (*S[y], *[xstr[p] for p in perm])
    return [Launch("transpose_v1", math.prod(S[y]), (
        Act(x), Table(table), Act(y), math.prod(S[y]), len(S[y])))]


def _lower_concat(node, S, P):
    a, (y,) = node.attrs, node.outputs
    ys = S[y]
    axis = int(a["axis"]) % len(ys)
    inner = math.prod(ys[axis + 1:])
    launches, offset = [], 0
    for x, z, m, k in zip(node.inputs, a["x_zero_points"], a["multipliers"], a["shifts"],
                          strict=True):
        part = S[x][axis] * inner
        launches.append(Launch("concat_v1", math.prod(S[x]), (
            Act(x), Act(y), math.prod(S[x]), part, ys[axis] * inner, offset, int(z), int(m),
            int(k), int(a["y_zero_point"]))))
        offset += part
    return launches


def _lower_pad(node, S, P):
    a, (x,), (y,) = node.attrs, node.inputs, node.outputs
    r = len(S[x])
    table = (*S[y], *S[x], *[int(v) for v in a["pads"][:r]])
    return [Launch("pad_v1", math.prod(S[y]), (
        Act(x), Table(table), Act(y), math.prod(S[y]), r,
        _PAD_MODES[a.get("mode", "constant")], int(a.get("value", 0))))]


LOWER = {
    "conv1d": _lower_conv, "conv2d": _lower_conv, "conv3d": _lower_conv,
    "dense": _lower_dense, "matmul": _lower_matmul,
    "requantize": _lower_requantize, "batchnorm": _lower_batchnorm, "relu": _lower_relu,
    "clip": _lower_clip, "prelu": _lower_prelu, "add": _lower_add, "mul": _lower_mul,
    "lut": _lower_lut, "softmax": _lower_softmax,
    "max_pool": _lower_max_pool, "avg_pool": _lower_avg_pool,
    "global_avg_pool": _lower_global_avg_pool,
    "flatten": _lower_copy, "reshape": _lower_copy, "identity": _lower_copy,
    "transpose": _lower_transpose, "concat": _lower_concat, "pad": _lower_pad,
}


def lower(node, shapes, buffers):
    """The launches of one node; ``shapes`` are concrete (batch substituted)."""
    if node.op not in LOWER:
        raise UnsupportedOpError(f"node {node.name!r}: op {node.op!r} has no CUDA kernel")
    steps = LOWER[node.op](node, shapes, {r: buffers[b] for r, b in node.params.items()})
    for s in steps:
        if isinstance(s, Launch):
            check_launch(s, node.outputs[0])
    return steps


# ---------------------------------------------------------------- CuPy device

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


_modules = {}  # (device id, family) -> cupy.RawModule
_modules_lock = threading.Lock()


def _verbose_env():
    return os.environ.get("SYNAPSE_VERBOSE", "") not in ("", "0")


class CupyDevice:
    """The device interface of CudaExecutable, on the current CuPy device and one stream."""

    name = "cuda"

    def __init__(self, verbose=False):
        self.description = require()
        self.cp = _cupy()
        self.device = self.cp.cuda.Device()
        self.stream = self.cp.cuda.Stream(non_blocking=True)
        self.verbose = verbose

    def _module(self, family):
        key = (self.device.id, family)
        with _modules_lock:
            if key not in _modules:
                t0 = time.perf_counter()
                with self.device:
                    try:
                        # No -arch option: CuPy picks the device's own and keys its
                        # disk cache on it (and on the inlined source text).
                        mod = self.cp.RawModule(code=kernel_source(family),
                                                options=("-std=c++17",))
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
        with self.device, self.stream:
            fn(((n + BLOCK - 1) // BLOCK,), (BLOCK,), args)

    def copy(self, dst, src):
        with self.device, self.stream:
            dst[...] = src  # an elementwise copy kernel, in stream order

    def write(self, dst, a):
        dst.set(a, stream=self.stream)

    def read(self, src):
        return src.get(stream=self.stream)

    def synchronize(self):
        self.stream.synchronize()


# ---------------------------------------------------------------- executable

class _Plan:
    """Everything that depends on the batch size: slots, views, tables, launches."""

    def __init__(self, exe, batch):
        dev, tr = exe.dev, exe.traversal
        self.batch = batch
        self.shapes = {t: concrete(s, batch) for t, s in tr.shapes.items()}
        slots = [dev.empty(max(1, e * batch)) for e in tr.slot_elems]
        self.views = {t: slots[s][:math.prod(self.shapes[t])].reshape(self.shapes[t])
                      for t, s in tr.slot_of.items()}
        self.steps = []  # per node: [("copy", dst, src) or ("launch", kernel, n, args)]
        for node in tr.order:
            todo = []
            for s in lower(node, self.shapes, exe.graph.buffers):
                if isinstance(s, Copy):  # flat views: reshape and flatten change the shape
                    todo.append(("copy", self.views[s.dst].reshape(-1),
                                 self.views[s.src].reshape(-1)))
                else:
                    todo.append(("launch", exe.kernel(s.kernel), s.n,
                                 tuple(self._resolve(exe, a) for a in s.args)))
            self.steps.append(todo)

    def _resolve(self, exe, a):
        if isinstance(a, Act):
            return self.views[a.name]
        if isinstance(a, Param):
            return exe.param(a)
        if isinstance(a, Table):
            # never an empty table: a zero-length device array may have no address
            return exe.dev.upload(np.array(a.values or (0,), dtype=np.int64))
        return np.int64(a)  # every scalar parameter of a kernel is a long long


class CudaExecutable:
    """A graph prepared on one device: parameters resident, kernels loaded."""

    device = "cuda"

    def __init__(self, graph, traversal, dev=None, verbose=None):
        self.graph, self.traversal = graph, traversal
        self.verbose = _verbose_env() if verbose is None else verbose
        self.dev = dev if dev is not None else CupyDevice(self.verbose)
        self._params = {}  # (buffer id, dtype) -> device array, shared by every node
        self._kernels = {}
        # Lower every node, upload the parameters and load the kernels now, so that
        # errors surface at prepare. Only the last batch size's plan is kept.
        self._plan = _Plan(self, 1)

    def kernel(self, name):
        if name not in self._kernels:
            self._kernels[name] = self.dev.kernel(name)
        return self._kernels[name]

    def param(self, p):
        key = (p.buffer, p.dtype)
        if key not in self._params:
            a = self.graph.buffers[p.buffer]
            b = np.ascontiguousarray(a, dtype=p.dtype)
            if not np.array_equal(a, b):
                raise DtypeError(f"parameter buffer {p.buffer!r} ({a.dtype}) has values outside "
                                 f"{p.dtype}, the type its CUDA kernel reads")
            self._params[key] = self.dev.upload(b)
        return self._params[key]

    def _plan_for(self, batch):
        if self._plan is None or self._plan.batch != batch:
            self._plan = None  # free the old slots before allocating the new ones
            self._plan = _Plan(self, batch)
        return self._plan

    def run(self, feeds, trace=False):
        """feeds: {input name: int8 array (batch, ...)} -> ({output name: int8}, trace)."""
        shapes = self.traversal.shapes
        batch = next((int(np.shape(feeds[t.name])[0]) for t in self.graph.inputs
                      if shapes[t.name][0] == -1), 1)  # 1: every input has a fixed size
        plan = self._plan_for(batch)
        dev = self.dev
        for t in self.graph.inputs:
            dev.write(plan.views[t.name], np.ascontiguousarray(feeds[t.name], dtype=np.int8))
        steps = [] if trace else None
        for node, todo in zip(self.traversal.order, plan.steps):
            for kind, *step in todo:
                if kind == "copy":
                    dev.copy(*step)
                else:
                    dev.launch(*step)
            if trace:  # the slot may be reused later: read it now, in stream order
                steps.append((node.name, node.outputs[0], dev.read(plan.views[node.outputs[0]])))
        outputs = {t.name: dev.read(plan.views[t.name]) for t in self.graph.outputs}
        dev.synchronize()
        return outputs, steps


def prepare(graph, traversal, verbose=None):
    """Upload the parameters and load the kernels of a planned graph on the current GPU."""
    return CudaExecutable(graph, traversal, verbose=verbose)
