"""CUDA backend: the kernels of cuda_kernels/ through CuPy, same bits as reference/.

prepare(graph, traversal) uploads every parameter once; CudaExecutable.run(feeds)
keeps the activations on the device in the core's planned slots, launches every
node on one stream and copies back only the graph outputs (and, with trace=True,
each node's output).

Three seams, each its own module (this one holds the executable and re-exports
their public names):
- cuda_device: the device (CuPy, memory, the stream, launches);
- cuda_source: kernel loading (sources with includes inlined, NVRTC options,
  parameter signatures);
- cuda_lowering: the op launchers (a node -> kernel launches with symbolic
  arguments, checked against the signatures).
tests/emucuda runs this backend unchanged on an emulated device (a `cupy`
stand-in), so everything but the real GPU is tested without one.

CuPy is imported lazily: importing this module never imports cupy.
"""
from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np

from ..errors import DtypeError
from .cuda_device import BLOCK, INSTALL_HINT, CupyDevice, grid_for, is_available, require  # noqa: F401
from .cuda_lowering import (LOWER, Act, Copy, Launch, Param, Table, check_launch,  # noqa: F401
                            concrete, lower)
from .cuda_source import (FAMILIES, NVRTC_OPTIONS, _kernel_files, kernel_signatures,  # noqa: F401
                          kernel_source)
from .cuda_variants import Chooser


def _verbose_env():
    return os.environ.get("SYNAPSE_VERBOSE", "") not in ("", "0")


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
            steps = exe.variants.lower(node, self.shapes, exe.graph.buffers)
            for s in steps or lower(node, self.shapes, exe.graph.buffers):
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

    def __init__(self, graph, traversal, dev=None, verbose=None, device_id=None, variant=None):
        self.graph, self.traversal = graph, traversal
        self.verbose = _verbose_env() if verbose is None else verbose
        self.dev = dev if dev is not None else CupyDevice(self.verbose, device_id)
        self.device_id = getattr(self.dev, "device_id", None)
        # conv/dense kernel variants (cuda_variants.py): same bits, chosen per layer shape
        cc = getattr(getattr(self.dev, "device", None), "compute_capability", None)
        self.variants = Chooser(variant, cc)
        self._params = {}  # (buffer id, dtype) -> device array, shared by every node
        self._kernels = {}
        # Lower every node, upload the parameters and load the kernels now, so that
        # errors surface at prepare. Only the last batch size's plan is kept.
        self._plan = _Plan(self, 1)
        if self.verbose and self.variants.chosen:
            print("synapse: CUDA conv/dense kernel variants: " + ", ".join(
                f"{v} x{n}" for v, n in sorted(Counter(self.variants.chosen.values()).items())))

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

    def run(self, feeds, trace=False, device_outputs=False):
        """feeds: {input name: int8 array (batch, ...)} -> ({output name: int8}, trace).

        A feed may be a numpy array or an array of this device (CupyDevice.adopt), copied
        device to device; device_outputs: the outputs as new device arrays.
        """
        shapes = self.traversal.shapes
        batch = next((int(feeds[t.name].shape[0]) for t in self.graph.inputs
                      if shapes[t.name][0] == -1), 1)  # 1: every input has a fixed size
        plan = self._plan_for(batch)
        dev = self.dev
        for t in self.graph.inputs:
            a = feeds[t.name]
            if isinstance(a, np.ndarray):
                dev.write(plan.views[t.name], np.ascontiguousarray(a, dtype=np.int8))
            else:
                dev.copy(plan.views[t.name], a)
        steps = [] if trace else None
        for node, todo in zip(self.traversal.order, plan.steps):
            for kind, *step in todo:
                if kind == "copy":
                    dev.copy(*step)
                else:
                    dev.launch(*step)
            if trace:  # the slot may be reused later: read it now, in stream order
                steps.append((node.name, node.outputs[0], dev.read(plan.views[node.outputs[0]])))
        fetch = dev.clone if device_outputs else dev.read
        outputs = {t.name: fetch(plan.views[t.name]) for t in self.graph.outputs}
        dev.synchronize()
        return outputs, steps


def prepare(graph, traversal, verbose=None, device_id=None, variant=None):
    """Upload the parameters and load the kernels of a planned graph on GPU device_id
    (None: CuPy's current device). variant forces conv/dense kernel variants
    (cuda_variants.py; None: SYNAPSE_CUDA_VARIANT, the variant table, else v1)."""
    return CudaExecutable(graph, traversal, verbose=verbose, device_id=device_id, variant=variant)
