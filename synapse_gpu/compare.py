"""Exact node-by-node comparison of two runs of one model, and the first node where they part.

Each side maps tensor names to an int8 array or, where only a digest travelled
(a trace file), to its sha256 hex digest. Every node is compared exactly: the
share of identical elements, the largest difference in quantization steps, the
first differing element. A differing node is classified from its inputs:
    rule        its inputs were identical on both sides, its output is not:
                this node's own computation (op rule, kernel, parameters) differs
    propagated  an input already differed, and this node, fed the other side's
                inputs, gives the other side's output: it only passes differences on
    propagated+rule  an input already differed, and fed the other side's inputs
                this node still disagrees: its own rule differs as well
    unknown     an input has no counterpart on the other side to tell
(the "fed the other side's inputs" check needs arrays on both sides; with
digests only, every differing node after the first is "propagated").
A node with no counterpart (onnxruntime keeps that tensor in float, or fused it
away) counts as identical when its inputs are, but only if it merely moves bytes
(flatten, reshape, ...); after a computing node with no counterpart, its
readers' cause is "unknown".

Sources: synapse on a device (tracefile.node_outputs), a trace file
(tracefile.load), onnxruntime (compare_ort.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .digest import tensor_digest
from .errors import InputError
from .opdefs import OPS

SAME, DIFFERS, MISSING = "same", "differs", "missing"


@dataclass(frozen=True)
class NodeComparison:
    index: int
    node: str
    op: str
    tensor: str
    shape: tuple
    status: str  # SAME, DIFFERS or MISSING (no counterpart on the other side)
    identical: float | None = None  # share of identical elements; None: digests only
    max_steps: int | None = None
    first_index: tuple | None = None  # first differing element, C order
    cause: str | None = None  # when DIFFERS: rule, propagated, propagated+rule, unknown
    theirs_op: str | None = None  # how the other engine computed it, where known


@dataclass
class Comparison:
    ours: str  # what each side was, e.g. "synapse cpu", "onnxruntime", "trace b.json"
    theirs: str
    inputs: list  # NodeComparison per graph input (index -1, op "input")
    nodes: list  # NodeComparison per node, execution order
    notes: list = field(default_factory=list)

    @property
    def identical(self):
        return all(c.status != DIFFERS for c in self.inputs + self.nodes)

    @property
    def first_divergent(self):
        return next((c for c in self.inputs + self.nodes if c.status == DIFFERS), None)

    @property
    def origins(self):
        """Differing nodes whose own computation differs: where the two runs part."""
        return [c for c in self.nodes if c.cause in ("rule", "propagated+rule")]

    def verdict(self):
        mapped = sum(c.status != MISSING for c in self.nodes)
        head = f"{self.ours} vs {self.theirs}: {mapped} of {len(self.nodes)} nodes compared"
        c = self.first_divergent
        if c is None:
            return f"{head}, all identical"
        if c.index < 0:
            return f"{head}; graph input {c.tensor!r} already differs"
        where = f"first divergent node: {c.node} ({c.op}), {_cause_text(c.cause)}"
        if c.theirs_op:
            where += f"; {self.theirs} ran it as {c.theirs_op}"
        return f"{head}, {sum(n.status == DIFFERS for n in self.nodes)} differ; {where}"

    def table(self, all_nodes=False, limit=None):
        """One line per node (only the differing ones unless all_nodes; at most `limit`)."""
        rows = [f"{'#':>4} {'node':<28} {'op':<15} {'shape':<18} {'identical':>10} "
                f"{'max steps':>9}  {'first diff':<16} {'cause':<15} {self.theirs}"]
        shown = [c for c in self.inputs + self.nodes if all_nodes or c.status == DIFFERS]
        for c in shown[:limit]:
            ident = _identical_text(c)
            steps = "" if c.max_steps is None else str(c.max_steps)
            first = "" if c.first_index is None else str(list(c.first_index))
            idx = "in" if c.index < 0 else str(c.index)
            rows.append(f"{idx:>4} {c.node[:28]:<28} {c.op[:15]:<15} {str(list(c.shape))[:18]:<18} "
                        f"{ident:>10} {steps:>9}  {first:<16} {c.cause or '':<15} "
                        f"{c.theirs_op or ''}".rstrip())
        if limit is not None and len(shown) > limit:
            rows.append(f"     ... {len(shown) - limit} more rows")
        return "\n".join(rows)


def _identical_text(c):
    if c.status != DIFFERS:
        return "100%" if c.status == SAME else "-"
    if c.identical is None:
        return "differs"  # digests only
    return f"{math.floor(c.identical * 1e6) / 1e4:.4f}%"  # never rounds up to 100%


def _cause_text(cause):
    return {"rule": "its inputs were identical (this op's rule differs)",
            "propagated": "an input already differed (propagated)",
            "propagated+rule": "an input already differed, and its own rule differs too",
            "unknown": "its inputs have no counterpart to tell"}[cause]


def _digest(tensor, v):
    return v if isinstance(v, str) else tensor_digest(tensor, v)


def compare_tensor(tensor, a, b):
    """(status, identical, max_steps, first_index) of two int8 arrays or digests."""
    if a is None or b is None:
        return MISSING, None, None, None
    if isinstance(a, str) or isinstance(b, str):
        same = _digest(tensor, a) == _digest(tensor, b)
        return (SAME, 1.0, 0, None) if same else (DIFFERS, None, None, None)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return DIFFERS, 0.0, None, None
    ne = a != b
    if not ne.any():
        return SAME, 1.0, 0, None
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(ne)), a.shape))
    return DIFFERS, float(1 - ne.mean()), int(d.max()), first


def compare_steps(steps, input_names, ours, theirs, labels=("ours", "theirs"), notes=(), how=None,
                  rerun=None):
    """Compare two runs. steps: tracefile.Step per node in execution order;
    ours/theirs: tensor -> int8 array or digest (absent: no counterpart);
    how: tensor -> how the other side computed it (e.g. "float Conv + QuantizeLinear");
    rerun(step, inputs) -> our node's output on the given inputs (for "propagated+rule")."""
    how = how or {}
    state = {}  # tensor -> SAME / DIFFERS / None (unknown)
    inputs = []
    for name in input_names:
        st, ident, steps_, first = compare_tensor(name, ours.get(name), theirs.get(name))
        # an input with no counterpart was fed from the same values: count it identical
        state[name] = DIFFERS if st == DIFFERS else SAME
        shape = next((np.shape(v) for v in (ours.get(name), theirs.get(name))
                      if v is not None and not isinstance(v, str)), ())
        inputs.append(NodeComparison(-1, name, "input", name, tuple(shape), st, ident, steps_,
                                     first, "input" if st == DIFFERS else None))
    nodes = []
    for s in steps:
        before = [state.get(i) for i in s.inputs]
        upstream = (DIFFERS if DIFFERS in before else SAME if all(b == SAME for b in before)
                    else None)
        st, ident, steps_, first = compare_tensor(s.tensor, ours.get(s.tensor), theirs.get(s.tensor))
        cause = None
        if st == DIFFERS:
            cause = {SAME: "rule", DIFFERS: "propagated", None: "unknown"}[upstream]
            if cause == "propagated" and rerun is not None and _own_rule_differs(s, theirs, rerun):
                cause = "propagated+rule"
            state[s.tensor] = DIFFERS
        elif st == SAME:
            state[s.tensor] = SAME
        else:  # no counterpart: only a byte-moving op inherits its inputs' state
            moves_bytes = s.op in OPS and not OPS[s.op].compute
            state[s.tensor] = upstream if moves_bytes else None
        nodes.append(NodeComparison(s.index, s.node, s.op, s.tensor, tuple(s.shape), st, ident,
                                    steps_, first, cause, how.get(s.tensor)))
    return Comparison(labels[0], labels[1], inputs, nodes, list(notes))


def _own_rule_differs(step, theirs, rerun):
    """Whether our node, fed the other side's inputs, misses the other side's output."""
    ins = [theirs.get(i) for i in step.inputs]
    out = theirs.get(step.tensor)
    if any(v is None or isinstance(v, str) for v in ins + [out]):
        return False  # cannot tell: stay "propagated"
    return not np.array_equal(rerun(step, ins), out)


def cpu_rerun(graph, traversal):
    """A rerun function for compare_steps: one node at a time on the CPU backend."""
    from .backends import cpu

    fns = cpu.node_functions(graph, traversal)
    return lambda step, inputs: fns[step.node](*inputs)


def compare_traces(a, b, labels=("A", "B")):
    """Compare two tracefile.Trace objects (digests, or arrays where both kept them)."""
    notes = []
    if a.model_id != b.model_id:
        notes.append(f"the traces come from different models ({a.model_id[:16]}... and "
                     f"{b.model_id[:16]}...): nodes are matched by tensor name")
    if a.batch != b.batch:
        notes.append(f"batch sizes differ ({a.batch} and {b.batch})")
    known = {s.tensor for s in b.steps} | set(b.inputs)
    missing = [s.node for s in a.steps if s.tensor not in known]
    if missing:
        notes.append(f"{len(missing)} nodes of {labels[0]} are not in {labels[1]} "
                     f"(first: {missing[0]})")
    return compare_steps(a.steps, list(a.inputs), a.values(), b.values(), labels, notes)


def compare(model, feeds, against="onnxruntime", *, device="cpu", onnx_model=None,
            ort_options=None):
    """Run `model` (a model or an InferenceSession) with Synapse on `device` and compare
    every node with `against`.

    against: "onnxruntime" (model, or onnx_model, must be ONNX), a device name
    ("cpu", "cuda", ...), a trace file path or a tracefile.Trace.
    """
    from . import tracefile
    from .session import InferenceSession

    sess = model if isinstance(model, InferenceSession) else InferenceSession(model, device=device)
    q, _, steps = tracefile.node_outputs(sess, feeds)
    ours = dict(q)
    ours.update((s.tensor, y) for s, y in steps)
    plain = [s for s, _ in steps]
    names = [t.name for t in sess.graph.inputs]
    label = f"synapse {sess.device}"
    if isinstance(against, tracefile.Trace) or (isinstance(against, str) and
                                                against.lower().endswith(".json")):
        trace = against if isinstance(against, tracefile.Trace) else tracefile.load(against)
        notes = [] if trace.model_id == sess.model_id else [
            f"the trace is of another model ({trace.model_id[:16]}...)"]
        return compare_steps(plain, names, ours, trace.values(),
                             (label, f"trace ({trace.device})"), notes,
                             rerun=cpu_rerun(sess.graph, sess.report.traversal))
    if against == "onnxruntime":
        from .compare_ort import onnxruntime_tensors

        src = onnx_model if onnx_model is not None else model
        theirs, how, notes = onnxruntime_tensors(src, sess.graph, feeds, ort_options)
        return compare_steps(plain, names, ours, theirs, (label, "onnxruntime"), notes, how,
                             cpu_rerun(sess.graph, sess.report.traversal))
    if not isinstance(against, str):
        raise InputError(f"against={against!r}: use 'onnxruntime', a device name or a trace file")
    other = InferenceSession(sess.graph, device=against, strict=False)  # already accepted
    q2, _, steps2 = tracefile.node_outputs(other, feeds)
    theirs = dict(q2)
    theirs.update((s.tensor, y) for s, y in steps2)
    return compare_steps(plain, names, ours, theirs, (label, f"synapse {other.device}"),
                         rerun=cpu_rerun(sess.graph, sess.report.traversal))


def plot_agreement(comparison, path):
    """Draw the share of identical elements per node (matplotlib, the `plot` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'synapse-gpu[plot]'") from None
    nodes = [c for c in comparison.nodes if c.status != MISSING]
    colors = {"rule": "tab:red", "propagated+rule": "tab:purple", "propagated": "tab:orange",
              "unknown": "tab:gray"}
    ys = [100.0 * (c.identical if c.identical is not None else (1.0 if c.status == SAME else 0.0))
          for c in nodes]
    fig, ax = plt.subplots(figsize=(max(6, len(nodes) * 0.12), 3.5))
    ax.bar(range(len(nodes)), ys, color=[colors.get(c.cause, "tab:green") for c in nodes])
    ax.set_ylim(min(ys + [100]) - 5 if ys else 0, 100.5)
    from matplotlib.patches import Patch

    used = {c.cause or "identical" for c in nodes}
    ax.legend(handles=[Patch(color=colors.get(k, "tab:green"), label=k) for k in
                       ("identical", "rule", "propagated+rule", "propagated", "unknown") if k in used],
              fontsize=7, loc="lower left")
    ax.set_xlabel("node (execution order)")
    ax.set_ylabel("identical elements, %")
    first = comparison.first_divergent
    ax.set_title(f"{comparison.ours} vs {comparison.theirs}" +
                 (f": first divergent {first.node} ({first.op})" if first else ": identical"),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
