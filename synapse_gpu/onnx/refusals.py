"""Ops refused before anything else, with what to do instead.

They are refused by name in a pre-pass (before the float-island pass, which would
otherwise stop earlier with a less useful message about their float outputs).
"""
from __future__ import annotations

from ..errors import UnsupportedOpError
from .checks import label

_STATIC = ("Synapse needs a statically quantized model (fixed scales and zero points, "
           "calibrated once): quantize the float model with `synapse quantize` (or "
           "onnxruntime.quantization.quantize_static with calibration data) instead of "
           "quantize_dynamic")
_RECURRENT = ("recurrent layers run a data-dependent loop over time; the Synapse design runs "
              "sequences with 1-D convolutions instead: replace the recurrent layer by Conv1D "
              "layers over the time axis (a temporal convolutional network), then quantize again")

REFUSED = {
    "DynamicQuantizeLinear": "computes its scale and zero point from each input at run time, so "
                             "a sample's integers would depend on its own values and batch-mates",
    "DynamicQuantizeMatMul": "quantizes its input dynamically (quantize_dynamic's output)",
    "MatMulIntegerToFloat": "belongs to a dynamically quantized MatMul (quantize_dynamic's output)",
    "DynamicQuantizeLSTM": "is a dynamically quantized recurrent layer",
    "LSTM": "is a recurrent layer", "GRU": "is a recurrent layer", "RNN": "is a recurrent layer",
}


def refuse(order):
    """Raise UnsupportedOpError for the first refused node in `order`."""
    for n in order:
        if n.op_type in REFUSED:
            hint = _RECURRENT if n.op_type.endswith(("LSTM", "GRU", "RNN")) else _STATIC
            raise UnsupportedOpError(f"node {label(n)!r} (op {n.op_type}): {REFUSED[n.op_type]}; "
                                     f"no Synapse integer implementation; hint: {hint}")
