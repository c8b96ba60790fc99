"""LRN (local response normalization across channels) -> the `lrn` op (reference/lrn.py).

A float LRN between a DequantizeLinear and a QuantizeLinear (quantize_static leaves it
in float, in both formats) waits, like the other float ops, for the QuantizeLinear that
gives its output scale; its thresholds are then built once from both scales and the
ONNX attributes. A mixin of importer._Importer.
"""
from __future__ import annotations

from ..errors import UnsupportedOpError
from ..reference.lrn import MAX_SIZE, lrn_params
from .checks import label
from .values import Pending


class LrnOps:
    def _LRN(self, node):
        x = self._deq(node, 0)
        a = self._attrs(node)
        size = int(a["size"])
        alpha, beta, bias = (float(a.get(k, d)) for k, d in
                             (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
        if not 1 <= size <= MAX_SIZE or bias <= 0 or alpha < 0:
            self._fail(node, f"size {size} (1..{MAX_SIZE}), bias {bias} (> 0) and alpha "
                             f"{alpha} (>= 0) are required for an integer rule",
                       exc=UnsupportedOpError)

        def emit(ys, yz, qmin, qmax):
            xt = self._deq_t(x)
            s_x, z_x = self.b.quant[xt]
            p = lrn_params(s_x, z_x, ys, yz, size, alpha, beta, bias,
                           channels=self.b.shapes[xt][1])
            return self.b.add_node("lrn", [xt], attrs=dict(
                size=size, x_zero_point=int(z_x), qmin=int(qmin), qmax=int(qmax)),
                params=p, name=label(node), out_quant=(ys, yz))
        return Pending(node, emit)
