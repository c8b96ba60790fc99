"""CUDA backend: the kernels of cuda_kernels/ through CuPy, same bits as reference/.

prepare(graph, traversal) uploads every parameter once; CudaExecutable.run(feeds)
keeps the activations on the device in the core's planned slots, launches every
node on one stream and copies back only the graph outputs (and, with trace=True,
each node's output).

Buffers are planned once per batch size (_Plan: slots, views, tables, launches) and
kept for the next run at that size, within PLAN_BYTES. With CUDA graphs on (session
option synapse.cuda_graphs or SYNAPSE_CUDA_GRAPHS=1; off by default until a GPU run
has timed it), the second run at a batch size captures the traversal's launches
into a CUDA graph and every later run replays it: the feeds are copied into the
plan's fixed input slots before the replay, the outputs read after it. Runs that
cannot replay launch plainly and say why (graph_notes, verbose).

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
import warnings
from collections import Counter, OrderedDict

import numpy as np

from ..errors import DtypeError, OptionError
from .cuda_device import BLOCK, INSTALL_HINT, CupyDevice, grid_for, is_available, require  # noqa: F401
from .cuda_lowering import (LOWER, Act, Copy, Launch, Param, Table, check_launch,  # noqa: F401
                            concrete, lower)
from .cuda_source import (FAMILIES, NVRTC_OPTIONS, _kernel_files, kernel_signatures,  # noqa: F401
                          kernel_source)
from .cuda_variants import Chooser


GRAPHS_ENV = "SYNAPSE_CUDA_GRAPHS"
# Slot bytes the kept plans (one per batch size) may hold together: the least recently
# used are freed first, the plan in use always stays. A plan larger than this (the
# session's big chunks) gets no graph: launch overhead is a small share of its time.
PLAN_BYTES = 256 << 20
_SWITCH = {"1": True, "on": True, "true": True, "0": False, "off": False, "false": False, "": False}


def _verbose_env():
    return os.environ.get("SYNAPSE_VERBOSE", "") not in ("", "0")


def graphs_switch(value):
    """The CUDA graphs setting: True/False, "1"/"0", "on"/"off" (None: SYNAPSE_CUDA_GRAPHS,
    unset: off)."""
    if value is None:
        value = os.environ.get(GRAPHS_ENV, "0")
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in _SWITCH:
        raise OptionError(f"CUDA graphs setting {value!r} (synapse.cuda_graphs / {GRAPHS_ENV}): "
                          "use 1 or 0 (on or off)")
    return _SWITCH[key]


def _slot_sizes(traversal, batch):
    """int8 elements of each slot at this batch size. The core sizes slots per sample
    (axis 0 the batch); a tensor whose axis 0 is a fixed size instead (a graph input
    declared (32, 70)) needs all of its elements, whatever the batch."""
    sizes = [max(1, e * batch) for e in traversal.slot_elems]
    for t, s in traversal.slot_of.items():
        sizes[s] = max(sizes[s], math.prod(concrete(traversal.shapes[t], batch)))
    return sizes


class _Plan:
    """Everything that depends on the batch size: slots, views, tables, launches."""

    def __init__(self, exe, batch, sizes):
        dev, tr = exe.dev, exe.traversal
        self.batch = batch
        self.nbytes = sum(sizes)
        self.graph = None  # the captured traversal, replayed by every later run
        self.refusal = None  # why this plan runs plain launches for good (a failed capture)
        self.runs = 0
        self.shapes = {t: concrete(s, batch) for t, s in tr.shapes.items()}
        slots = [dev.empty(n) for n in sizes]
        self.views = {t: slots[s][:math.prod(self.shapes[t])].reshape(self.shapes[t])
                      for t, s in tr.slot_of.items()}
        for t, shape in exe.variants.plan_layout(tr.order, self.shapes, exe.graph.buffers,
                                                 [o.name for o in exe.graph.outputs]).items():
            self.views[t] = dev.empty(math.prod(shape)).reshape(shape)  # channels-last (conv v6)
        self.steps = []  # per node: [("copy", dst, src) or ("launch", kernel, n, args)]
        for node in tr.order:
            todo = []
            steps = exe.variants.lower(node, self.shapes, exe.graph.buffers)
            for s in steps or lower(node, self.shapes, exe.graph.buffers):
                if isinstance(s, Copy):  # flat views: reshape and flatten change the shape
                    todo.append(("copy", self.views[s.dst].reshape(-1),
                                 self.views[s.src].reshape(-1)))
                else:
                    todo.append(("trace" if s.trace_only else "launch", exe.kernel(s.kernel), s.n,
                                 tuple(self._resolve(exe, a) for a in s.args)))
            self.steps.append(todo)
        self.launches = sum(1 for todo in self.steps for kind, *step in todo
                            if kind == "copy" or kind == "launch" and step[1])  # n = 0: skipped

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

    def __init__(self, graph, traversal, dev=None, verbose=None, device_id=None, variant=None,
                 cuda_graphs=None):
        self.graph, self.traversal = graph, traversal
        self.verbose = _verbose_env() if verbose is None else verbose
        self.cuda_graphs = graphs_switch(cuda_graphs)
        self.dev = dev if dev is not None else CupyDevice(self.verbose, device_id)
        self.device_id = getattr(self.dev, "device_id", None)
        # conv/dense/matmul kernel variants (cuda_variants.py): same bits, chosen per layer shape
        cc = getattr(getattr(self.dev, "device", None), "compute_capability", None)
        self.variants = Chooser(variant, cc)
        self._params = {}  # (buffer id, dtype) -> device array, shared by every node
        self._kernels = {}
        self._plans = OrderedDict()  # batch size -> _Plan, least recently used first
        self.graph_notes = {}  # batch size -> how its last run launched (graph, or why not)
        # Lower every node, upload the parameters and load the kernels now, so that
        # errors surface at prepare.
        self._plan_for(1)
        if self.verbose and self.variants.chosen:
            print("synapse: CUDA conv/dense/matmul kernel variants: " + ", ".join(
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

    @property
    def _plan(self):
        """The plan of the last run."""
        return next(reversed(self._plans.values()))

    def _plan_for(self, batch):
        plan = self._plans.pop(batch, None)
        if plan is None:  # free least recently used plans before allocating the new one
            sizes = _slot_sizes(self.traversal, batch)
            need = sum(sizes)
            while self._plans and sum(p.nbytes for p in self._plans.values()) + need > PLAN_BYTES:
                self._plans.popitem(last=False)
            plan = _Plan(self, batch, sizes)
        self._plans[batch] = plan
        return plan

    def _graph_refusal(self, plan, trace):
        """Why this run launches plainly instead of replaying a CUDA graph (None: replay)."""
        if not self.cuda_graphs:
            return f"CUDA graphs off (session option synapse.cuda_graphs, {GRAPHS_ENV})"
        if trace:
            return "trace=True reads every node's output between launches"
        support = getattr(self.dev, "graph_support", None)
        reason = support() if support else f"{type(self.dev).__name__} has no stream capture"
        if reason or plan.refusal:
            return reason or plan.refusal
        if plan.nbytes > PLAN_BYTES:
            return (f"{plan.nbytes >> 20} MiB of buffers at batch {plan.batch}, over the "
                    f"{PLAN_BYTES >> 20} MiB that plans are kept within: a batch this large "
                    "gains little from a graph")
        if plan.graph is None and not plan.runs:
            # kernels and CuPy's copy kernel load outside any capture (PyTorch's rule too)
            return "first run at this batch size: plain launches, captured at the next"
        return None

    def _capture(self, plan):
        """plan.graph, or plan.refusal if this CuPy/driver refuses the capture."""
        try:
            plan.graph = self.dev.capture(lambda: self._issue(plan, False))
        except Exception as e:  # the capture's work never ran: run it plainly instead
            plan.refusal = f"capture failed ({type(e).__name__}: {e})"
            warnings.warn(f"synapse: CUDA graph capture at batch {plan.batch} failed; this batch "
                          f"size runs plain launches: {plan.refusal}", RuntimeWarning, stacklevel=4)

    def _issue(self, plan, trace):
        """Every node's launches on the stream; with trace, each node's output read back."""
        dev, steps = self.dev, [] if trace else None
        for node, todo in zip(self.traversal.order, plan.steps):
            for kind, *step in todo:
                if kind == "copy":
                    dev.copy(*step)
                elif kind == "launch" or trace:  # "trace": a conversion only a trace reads
                    dev.launch(*step)
            if trace:  # the slot may be reused later: read it now, in stream order
                steps.append((node.name, node.outputs[0], dev.read(plan.views[node.outputs[0]])))
        return steps

    def _traverse(self, plan, trace):
        """The traversal on the stream: the plan's graph replayed, else plain launches."""
        reason = self._graph_refusal(plan, trace)
        if reason is None and plan.graph is None:
            self._capture(plan)
            reason = plan.refusal
        plan.runs += 1
        note = reason or f"CUDA graph of {plan.launches} launches, replayed"
        if self.verbose and self.graph_notes.get(plan.batch) != note:
            print(f"synapse: batch {plan.batch}: {note}")
        self.graph_notes[plan.batch] = note
        if reason is not None:
            return self._issue(plan, trace)
        self.dev.replay(plan.graph)
        return None

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
        steps = self._traverse(plan, trace)
        fetch = dev.clone if device_outputs else dev.read
        outputs = {t.name: fetch(plan.views[t.name]) for t in self.graph.outputs}
        dev.synchronize()
        return outputs, steps


def prepare(graph, traversal, verbose=None, device_id=None, variant=None, cuda_graphs=None):
    """Upload the parameters and load the kernels of a planned graph on GPU device_id
    (None: CuPy's current device). variant forces conv/dense/matmul kernel variants
    (cuda_variants.py; None: SYNAPSE_CUDA_VARIANT, the variant table, else v1);
    cuda_graphs: replay each batch size's launches as a CUDA graph (graphs_switch)."""
    return CudaExecutable(graph, traversal, verbose=verbose, device_id=device_id, variant=variant,
                          cuda_graphs=cuda_graphs)
