"""op name -> numpy reference function (the same name in reference/, cuda_kernels/, tests)."""
from __future__ import annotations

import importlib

_MODULES = {
    "conv": ("conv1d", "conv2d", "conv3d"),
    "dense": ("dense", "matmul"),
    "elementwise": ("requantize", "batchnorm", "relu", "clip", "prelu", "add", "mul", "identity"),
    "pool": ("max_pool", "avg_pool", "global_avg_pool"),
    "shape": ("flatten", "reshape", "transpose", "concat", "pad"),
    "tables": ("lut",),
    "softmax": ("softmax",),
    "take": ("take",),
    "embedding": ("embedding", "constant"),
    "lrn": ("lrn",),
    "layernorm": ("layernorm",),
    "resize": ("resize_linear",),
}


def reference_op(op):
    for mod, names in _MODULES.items():
        if op in names:
            return getattr(importlib.import_module(f"synapse_gpu.reference.{mod}"), op)
    raise KeyError(op)


def node_kwargs(node, buffers):
    """A node's params (arrays) and attrs as the keyword arguments of its op function."""
    kw = {r: buffers[b] for r, b in node.params.items()}
    kw.update(node.attrs)
    return kw


def call(fn, node, inputs, buffers):
    """Apply a reference-signature function to a node: inputs positional, params and attrs keyword."""
    return fn(*inputs, **node_kwargs(node, buffers))
