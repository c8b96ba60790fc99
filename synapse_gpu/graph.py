"""The integer graph as plain data (ARCHITECTURE.md).

A Graph holds nodes by id, parameters by buffer id (two nodes may share a
buffer), the boundary tensors with their float32 scale and zero point, and the
quantization of every tensor (for tracing and dequantized reads only: backends
never read a float). Every activation is int8 with the batch as axis 0, -1 in
declared shapes. The structure is JSON-serializable apart from the buffers,
which the model file stores as named arrays.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelFormatError

BATCH = -1  # the dynamic batch dimension in a declared shape


@dataclass
class TensorSpec:
    """A graph input or output: int8 inside, float32 outside via (scale, zero_point)."""

    name: str
    shape: tuple  # axis 0 is the batch: BATCH or a fixed size
    scale: float  # a float32 value
    zero_point: int
    # "int64": token ids, fed as int64 (N, S...) and carried as their int32 bytes, shape
    # (N, S..., 4) int8 (reference/embedding.py); read only by embedding nodes
    dtype: str = "int8"

    def to_json(self):
        d = {"name": self.name, "shape": list(self.shape),
             "scale": float(np.float32(self.scale)), "zero_point": int(self.zero_point)}
        return d if self.dtype == "int8" else {**d, "dtype": self.dtype}  # older ids unchanged

    @classmethod
    def from_json(cls, d):
        return cls(d["name"], tuple(int(v) for v in d["shape"]), float(np.float32(d["scale"])),
                   int(d["zero_point"]), d.get("dtype", "int8"))


@dataclass
class Node:
    """One op: activation inputs/outputs by tensor name, params by buffer id."""

    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # role -> buffer id

    def to_json(self):
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": _jsonable(self.attrs),
                "params": dict(self.params)}

    @classmethod
    def from_json(cls, d):
        return cls(d["name"], d["op"], list(d["inputs"]), list(d["outputs"]),
                   dict(d.get("attrs", {})), dict(d.get("params", {})))


@dataclass
class Graph:
    inputs: list
    outputs: list
    nodes: list
    buffers: dict  # buffer id -> np.ndarray (int8 / int32 / int64)
    quant: dict = field(default_factory=dict)  # tensor name -> (scale, zero_point)
    metadata: dict = field(default_factory=dict)  # str -> str (producer, source, ...)

    def node(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def param(self, node, role):
        return self.buffers[node.params[role]]

    def structure_json(self):
        """Everything but the buffer contents, as JSON-ready plain data."""
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "nodes": [n.to_json() for n in self.nodes],
            "quant": {k: [float(np.float32(s)), int(z)] for k, (s, z) in sorted(self.quant.items())},
            "metadata": dict(sorted(self.metadata.items())),
        }

    @classmethod
    def from_structure(cls, d, buffers):
        try:
            with np.errstate(over="ignore"):  # a scale past float32 becomes inf: validate refuses it
                return cls(
                    inputs=[TensorSpec.from_json(t) for t in d["inputs"]],
                    outputs=[TensorSpec.from_json(t) for t in d["outputs"]],
                    nodes=[Node.from_json(n) for n in d["nodes"]],
                    buffers=dict(buffers),
                    quant={k: (float(v[0]), int(v[1])) for k, v in d.get("quant", {}).items()},
                    metadata=dict(d.get("metadata", {})),
                )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
            raise ModelFormatError(f"graph structure is malformed: {type(e).__name__}: {e}") from None


def _jsonable(v: Any):
    """Attributes as plain JSON types (numpy scalars and tuples normalised)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return v


class GraphBuilder:
    """Assemble a Graph in a few lines; tracks each tensor's (scale, zero_point).

    Low level: add_input, add_param, add_node, add_output. The op helpers with
    float scales (conv, dense, ...) live in synapse_gpu.build, which computes the
    integer multipliers from the scales so a test or a user never does it by hand.
    """

    def __init__(self):
        self.inputs, self.outputs, self.nodes = [], [], []
        self.buffers, self.quant, self.metadata = {}, {}, {}
        self._by_digest = {}
        self._names = {"node": set(), "tensor": set(), "buffer": set()}
        self.shapes = {}  # tensor -> shape, inferred as nodes are added

    def unique(self, base, kind="tensor"):
        if not isinstance(base, str):  # e.g. protobuf hands over invalid UTF-8 as bytes
            raise ModelFormatError(f"{kind} name {base!r} is not text (invalid UTF-8?)")
        name, i = base, 1
        while name in self._names[kind]:
            i += 1
            name = f"{base}_{i}"
        self._names[kind].add(name)  # nodes, tensors and buffers: separate namespaces
        return name

    def add_input(self, name, shape, scale, zero_point, dtype="int8"):
        name = self.unique(name)
        self.inputs.append(TensorSpec(name, tuple(int(v) for v in shape),
                                      float(np.float32(scale)), int(zero_point), dtype))
        self.quant[name] = (float(np.float32(scale)), int(zero_point))
        self.shapes[name] = tuple(int(v) for v in shape)
        return name

    def add_param(self, array, name="p"):
        """Store a parameter array; identical arrays share one buffer id."""
        a = np.ascontiguousarray(array)
        if a.dtype not in (np.int8, np.int32, np.int64):
            raise TypeError(f"parameter {name}: dtype {a.dtype}, expected int8/int32/int64")
        key = hashlib.sha256(a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()).hexdigest()
        if key not in self._by_digest:
            bid = self.unique(name, "buffer")
            self.buffers[bid] = a
            self._by_digest[key] = bid
        return self._by_digest[key]

    def add_node(self, op, inputs, attrs=None, params=None, name=None, n_outputs=1,
                 out_quant=None, output_names=None):
        """Add a node; params maps role -> array or existing buffer id. Returns output name(s)."""
        nname = self.unique(name or op, "node")
        pids = {}
        for role, p in (params or {}).items():
            pids[role] = p if isinstance(p, str) else self.add_param(p, f"{nname}.{role}")
        outs = [self.unique(t) for t in output_names or (
            [nname] if n_outputs == 1 else [f"{nname}:{i}" for i in range(n_outputs)])]
        node = Node(nname, op, list(inputs), outs, _jsonable(attrs or {}), pids)
        from .opdefs import check_schema  # fail at the line that adds a bad node

        for i in node.inputs:
            if i not in self.shapes:
                raise KeyError(f"node {nname}: unknown input tensor {i!r}")
        d = check_schema(node, self.buffers)
        out_shapes = d.shape(node, [self.shapes[i] for i in node.inputs],
                             {r: self.buffers[b] for r, b in pids.items()})
        self.shapes.update(zip(outs, (tuple(v) for v in out_shapes)))
        self.nodes.append(node)
        if out_quant is not None:
            for o in outs:
                self.quant[o] = (float(np.float32(out_quant[0])), int(out_quant[1]))
        return outs[0] if n_outputs == 1 else outs

    def add_output(self, tensor, name=None):
        """Mark a tensor as a graph output (its quant must be known)."""
        if tensor not in self.quant:
            raise KeyError(f"output {tensor}: scale and zero point unknown")
        s, z = self.quant[tensor]
        if name is not None and name != tensor:
            if name in self._names["tensor"]:
                raise ValueError(f"output name {name!r} is already a tensor of the graph")
            tensor = self.add_node("identity", [tensor], name=name, out_quant=(s, z),
                                   output_names=[name])
        self.outputs.append(TensorSpec(tensor, (), s, z))  # shape filled by shape inference
        return tensor

    def build(self, metadata=None):
        for t in self.outputs:
            t.shape = self.shapes[t.name]
        return Graph(list(self.inputs), list(self.outputs), list(self.nodes), dict(self.buffers),
                     dict(self.quant), {**self.metadata, **(metadata or {})})
