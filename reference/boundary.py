"""The model boundary: float32 <-> int8, single IEEE float32 operations on the host.

quantize   (ONNX QuantizeLinear):   q = clamp(rint_half_even(f32(x / s)) + z, -128, 127)
dequantize (ONNX DequantizeLinear): r = f32(f32(q - z) * s)
Both are one correctly rounded float32 operation per element, so they give the same
bits on every IEEE machine. NaN has no integer value (a NaN cast to int differs
between CPU and GPU) and is rejected; +-inf saturate to 127 / -128.
"""
import numpy as np

from .requant import INT8_MAX, INT8_MIN


def quantize(x, scale, zero_point):
    """float32 -> int8 with a per-tensor scale and zero point. Raises ValueError on NaN."""
    x = np.asarray(x, dtype=np.float32)
    if np.isnan(x).any():
        raise ValueError("NaN in a float input has no int8 value")
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(x / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(q, scale, zero_point):
    """int8 -> float32 with a per-tensor scale and zero point."""
    d = np.asarray(q).astype(np.int32) - np.int32(zero_point)
    return d.astype(np.float32) * np.float32(scale)
