"""Lookup-table ops: ``lut`` at run time, table builders at build time.

Run:   y = table[x + 128]: one int8 read per element, nothing else.
Build: the host computes each 256-entry int8 table ONCE, with float arithmetic,
and stores it in the model; the run never sees a float. Every builder follows
ONNX Runtime's QLinearSigmoid / QLinearLeakyRelu table construction:
    x_q  = -128..127
    x    = f32(f32(x_q - z_x) * s_x)                  (DequantizeLinear)
    y    = f(x) as a float32                          (the function)
    y_q  = clamp(rint_half_even(f32(y / s_y)) + z_y)  (QuantizeLinear)
Transcendental functions are evaluated in float64 on the float32 input and the
result rounded once to float32 (the float32 nearest the true value), so a table
does not depend on a platform's float32 exp; ONNX Runtime uses MLAS's own
approximations there (docs/ops_rules.md gives the measured agreement).
"""
import numpy as np

from .boundary import dequantize, quantize

_CODES = np.arange(-128, 128, dtype=np.int32)


def lut(x, *, table, fn=None):
    """y = table[x + 128] for int8 x and an int8 table of 256 entries.

    ``fn`` names the function the table was built from; it is informational only.
    No arithmetic, no bound.
    """
    return np.asarray(table, dtype=np.int8)[np.asarray(x, dtype=np.int64) + 128]


def unary_table(fn, s_x, z_x, s_y, z_y):
    """int8 table of y_q = Q(fn(DQ(x_q))) for the 256 codes x_q (module docstring).

    ``fn`` maps a float32 array to values that are rounded to float32.
    """
    x = dequantize(_CODES, s_x, z_x)
    with np.errstate(over="ignore"):  # a value past the float32 range becomes +-inf: quantize saturates it
        y = np.asarray(fn(x)).astype(np.float32)
    return quantize(y, s_y, z_y)


def _sigmoid64(x):
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_table(s_x, z_x, s_y, z_y):
    """Table of sigmoid(x) = 1 / (1 + exp(-x)) (float64, rounded to float32)."""
    return unary_table(_sigmoid64, s_x, z_x, s_y, z_y)


def tanh_table(s_x, z_x, s_y, z_y):
    """Table of tanh(x) (float64, rounded to float32)."""
    return unary_table(lambda x: np.tanh(x.astype(np.float64)), s_x, z_x, s_y, z_y)


def leaky_relu_table(alpha, s_x, z_x, s_y, z_y):
    """Table of x >= 0 ? x : f32(alpha * x), in float32 exactly as ONNX Runtime's
    QLinearLeakyRelu (alpha is a float32 attribute; ONNX's default is 0.01)."""
    a = np.float32(alpha)
    return unary_table(lambda x: np.where(x >= 0, x, a * x), s_x, z_x, s_y, z_y)


def hard_sigmoid_table(alpha, beta, s_x, z_x, s_y, z_y):
    """Table of max(0, min(1, f32(f32(alpha * x) + beta))), in float32 (ONNX
    HardSigmoid; its defaults are alpha = 0.2, beta = 0.5)."""
    a, b = np.float32(alpha), np.float32(beta)
    return unary_table(lambda x: np.clip(a * x + b, np.float32(0), np.float32(1)),
                       s_x, z_x, s_y, z_y)
