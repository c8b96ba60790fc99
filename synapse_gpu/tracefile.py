"""Trace files: every node's output digest of one run, written on one machine and
compared on another without moving tensors (`synapse trace`, `synapse diff`).

File layout (docs/SPEC.md, "Trace file"): UTF-8 JSON, keys sorted (one node per line),
    {"format": "synapse-trace", "version": 1,
     "model_id": hex, "device": str, "batch": int, "run_digest": hex,
     "inputs":  [{"name", "shape", "digest"}],            graph inputs (int8, after the boundary)
     "nodes":   [{"index", "node", "op", "tensor", "shape", "digest"}],   execution order
     "outputs": [{"name", "shape", "digest"}],
     "tensors": null | "FILE.npz"}
Every digest is digest.tensor_digest(name, int8 array): the same value as a
RunResult trace entry. With tensors, FILE.npz (beside the JSON, named relative to
it) holds each input's and node's int8 array under its tensor name, so `synapse
compare --against FILE.json` can count differing elements, not only digests.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from .digest import run_digest, tensor_digest
from .errors import InputError, ModelFormatError

FORMAT, VERSION = "synapse-trace", 1


@dataclass(frozen=True)
class Step:
    """One node of a run: its name, op, activation inputs, output tensor."""

    index: int
    node: str
    op: str
    inputs: tuple
    tensor: str
    shape: tuple


@dataclass
class Trace:
    model_id: str
    device: str
    batch: int
    run_digest: str
    inputs: dict  # graph input name -> (shape, digest)
    steps: list  # Step per node, execution order
    digests: dict  # tensor -> digest, for inputs and every node output
    outputs: dict  # graph output name -> (shape, digest)
    tensors: dict | None = None  # tensor -> int8 array, when kept

    def values(self):
        """tensor -> int8 array where kept, else its digest (what compare.py accepts)."""
        return {t: (self.tensors[t] if self.tensors and t in self.tensors else d)
                for t, d in self.digests.items()}


def node_outputs(sess, feeds):
    """Run a session once and keep every node's int8 output.

    Returns (int8 feeds, {output name: int8}, [(Step, array)]). This reads the
    backend's own trace: the arrays run_full(trace=True) computes its digests from.
    """
    q, outs, steps = sess.run_traced(feeds)
    nodes = {n.name: n for n in sess.graph.nodes}
    out = []
    for i, (name, tensor, y) in enumerate(steps):
        y = np.asarray(y)
        out.append((Step(i, name, nodes[name].op, tuple(nodes[name].inputs), tensor,
                         tuple(y.shape)), y))
    return q, outs, out


def record(sess, feeds, keep_tensors=False):
    """Run `sess` on `feeds` and return its Trace."""
    q, outs, steps = node_outputs(sess, feeds)
    g = sess.graph
    digests = {t: tensor_digest(t, a) for t, a in q.items()}
    digests.update((s.tensor, tensor_digest(s.tensor, y)) for s, y in steps)
    tensors = None
    if keep_tensors:
        tensors = dict(q)
        tensors.update((s.tensor, y) for s, y in steps)
    rd = run_digest(sess.model_id, [(t.name, q[t.name]) for t in g.inputs],
                    [(t.name, outs[t.name]) for t in g.outputs])
    return Trace(sess.model_id, sess.device, int(len(next(iter(q.values())))), rd,
                 {t.name: (tuple(q[t.name].shape), digests[t.name]) for t in g.inputs},
                 [s for s, _ in steps], digests,
                 {t.name: (tuple(outs[t.name].shape), tensor_digest(t.name, outs[t.name]))
                  for t in g.outputs}, tensors)


def to_doc(trace, tensors_file=None):
    """The trace as the JSON document of the file layout above."""
    return {
        "format": FORMAT, "version": VERSION, "model_id": trace.model_id, "device": trace.device,
        "batch": trace.batch, "run_digest": trace.run_digest,
        "inputs": [{"name": k, "shape": list(s), "digest": d} for k, (s, d) in trace.inputs.items()],
        "nodes": [{"index": s.index, "node": s.node, "op": s.op, "inputs": list(s.inputs),
                   "tensor": s.tensor, "shape": list(s.shape), "digest": trace.digests[s.tensor]}
                  for s in trace.steps],
        "outputs": [{"name": k, "shape": list(s), "digest": d}
                    for k, (s, d) in trace.outputs.items()],
        "tensors": tensors_file,
    }


def from_doc(doc, where):
    """A Trace from its JSON document (without tensors); `where` names it in errors."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFormatError(f"{where} is not a trace file (format {FORMAT!r} expected; "
                               "write one with `synapse trace`)")
    if doc.get("version") != VERSION:
        raise ModelFormatError(f"{where}: trace version {doc.get('version')!r}, this synapse reads "
                               f"version {VERSION}")
    try:
        steps = [Step(int(n["index"]), str(n["node"]), str(n["op"]), tuple(n["inputs"]),
                      str(n["tensor"]), tuple(n["shape"])) for n in doc["nodes"]]
        digests = {i["name"]: str(i["digest"]) for i in doc["inputs"]}
        digests.update((n["tensor"], str(n["digest"])) for n in doc["nodes"])
        return Trace(str(doc["model_id"]), str(doc["device"]), int(doc["batch"]),
                     str(doc["run_digest"]),
                     {i["name"]: (tuple(i["shape"]), str(i["digest"])) for i in doc["inputs"]},
                     steps, digests,
                     {o["name"]: (tuple(o["shape"]), str(o["digest"])) for o in doc["outputs"]})
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{where}: malformed trace ({type(e).__name__}: {e})") from None


def save(trace, path):
    """Write the JSON (and FILE.npz beside it when the trace holds tensors)."""
    npz = None
    if trace.tensors is not None:
        npz = os.path.splitext(os.path.basename(path))[0] + ".npz"
        np.savez(os.path.join(os.path.dirname(os.path.abspath(path)), npz), **trace.tensors)
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps(to_doc(trace, npz)) + "\n")


def dumps(doc, indent=""):
    """JSON with sorted keys, one short object per line (a node per line: a text diff of
    two trace files shows the differing nodes' lines)."""
    flat = json.dumps(doc, sort_keys=True)
    if len(flat) <= 240 or not isinstance(doc, (dict, list)):
        return flat
    inner = indent + " "
    if isinstance(doc, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in sorted(doc.items())]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return "[\n" + ",\n".join(inner + dumps(v, inner) for v in doc) + "\n" + indent + "]"


def load(path):
    """Read a trace file; ModelFormatError names what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise InputError(f"cannot read trace file {path}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path} is not a trace file (not JSON: {e})") from None
    trace = from_doc(doc, path)
    if doc.get("tensors"):
        npz = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(doc["tensors"]))
        try:
            with np.load(npz, allow_pickle=False) as data:
                trace.tensors = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise InputError(f"{path} names tensors file {npz}, which cannot be read: {e}") from None
        bad = [k for k, a in trace.tensors.items() if trace.digests.get(k) != tensor_digest(k, a)]
        if bad:
            raise ModelFormatError(f"{npz}: tensors {bad[:3]} do not match the trace's digests")
    return trace
