"""Shape inference over a whole graph, from the op table (no kernel runs)."""
from __future__ import annotations

from .errors import ShapeError
from .opdefs import check_schema
from .plan import topological_order


def infer_shapes(graph, order=None):
    """Return {tensor: shape} for every tensor; axis 0 is the batch (-1 if dynamic)."""
    shapes = {}
    for t in graph.inputs:
        if len(t.shape) < 1 or any(d < 1 for d in t.shape[1:]) or t.shape[0] not in (-1,) and t.shape[0] < 1:
            raise ShapeError(f"graph input {t.name!r}: shape {list(t.shape)} must be (batch, positive dims...)")
        shapes[t.name] = tuple(t.shape)
    for n in order or topological_order(graph):
        d = check_schema(n, graph.buffers)
        params = {r: graph.buffers[b] for r, b in n.params.items()}
        outs = d.shape(n, [shapes[i] for i in n.inputs], params)
        for o, s in zip(n.outputs, outs):
            shapes[o] = tuple(int(v) for v in s)
    return shapes
