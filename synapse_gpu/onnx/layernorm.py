"""LayerNormalization -> the `layernorm` op (reference/layernorm.py: integer mean and
variance, integer square root, per-element requantization).

quantize_static (QDQ) leaves it between a DequantizeLinear and a QuantizeLinear, with
its Scale a DequantizeLinear of int8 weights and its B a DequantizeLinear of int32: the
rule takes their real values (float32) and rescales them once, at the output scale
that the QuantizeLinear gives. A mixin of importer._Importer.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedOpError
from ..reference.layernorm import layernorm_params
from .checks import label
from .values import Pending


class LayerNormOps:
    def _LayerNormalization(self, node):
        if any(node.output[1:]):
            self._fail(node, "the Mean / InvStdDev outputs are training outputs",
                       exc=UnsupportedOpError)
        x = self._deq(node, 0)
        shape = self.b.shapes[self._deq_t(x)]
        a = self._attrs(node)
        axis = int(a.get("axis", -1)) % len(shape)
        if axis == 0:
            self._fail(node, "normalizes over axis 0, the batch: samples would mix",
                       exc=UnsupportedOpError)
        inner = tuple(shape[axis:])
        n = math.prod(inner)

        def per_element(i, what, default):
            if len(node.input) <= i or not node.input[i]:
                return np.full(n, default, np.float32)
            v = self._float_param(node, i, what)
            try:
                return np.broadcast_to(v, inner).reshape(-1)
            except ValueError:
                self._fail(node, f"{what} of shape {list(v.shape)} does not broadcast to the "
                                 f"normalized shape {list(inner)}", exc=UnsupportedOpError)
        gamma, beta = per_element(1, "scale", 1.0), per_element(2, "bias", 0.0)
        eps = float(a.get("epsilon", 1e-5))

        def emit(ys, yz, qmin, qmax):
            xt = self._deq_t(x)
            s_x, z_x = self.b.quant[xt]
            try:
                p, at = layernorm_params(gamma, beta, eps, s_x, ys)
            except ValueError as e:
                self._fail(node, str(e), exc=UnsupportedOpError)
            return self.b.add_node("layernorm", [xt], attrs=dict(
                axis=axis, x_zero_point=int(z_x), y_zero_point=int(yz), qmin=int(qmin),
                qmax=int(qmax), **at), params=p, name=label(node), out_quant=(ys, yz))
        return Pending(node, emit)
