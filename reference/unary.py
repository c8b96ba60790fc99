"""Functions of one int8 tensor as 256-entry tables: the float64 definitions.

An elementwise float function of ONE quantized tensor (Sigmoid, Erf, HardSwish,
x * sigmoid(x), x / sqrt(2) -> Erf -> + 1 -> * x -> * 0.5, ...) has only 256
possible inputs, so it runs as the `lut` op (reference/tables.py): y = table[x + 128].
The table is built once, at import, and stored in the model (the model id pins it):

    x    = f32(f32(x_q - z_x) * s_x)                   (DequantizeLinear, float32)
    v    = f(x) evaluated in float64, the whole chain  (ONNX op definitions below;
           float attributes and constants are their float32 values, exactly)
    y    = v rounded once to float32 (nearest, ties to even; beyond the float32
           range -> +-inf, which the quantize saturates)
    y_q  = clamp(rint_half_even(f32(y / s_y)) + z_y)    (QuantizeLinear)

A NaN anywhere in the table (Log or Sqrt of a negative input, 0 * inf) has no int8
value: the builder raises ValueError naming the input code.
Evaluating in float64 and rounding once makes the table independent of a platform's
float32 exp/erf; onnxruntime evaluates each op in float32 (with MLAS approximations),
so a table entry can differ from it by one step where a value lies within float32
noise of a rounding boundary (docs/ops_rules.md gives the measured agreement).
"""
import math

import numpy as np

from .tables import _CODES, _sigmoid64
from .boundary import dequantize, quantize

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _hard_sigmoid(x, alpha=0.2, beta=0.5):
    return np.clip(alpha * x + beta, 0.0, 1.0)


def _softplus(x):
    return np.logaddexp(0.0, x)  # log(1 + exp(x)) without overflow


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


# ONNX op -> (float64 function of its first input, {attribute: ONNX default}).
UNARY = {
    "Sigmoid": (_sigmoid64, {}),
    "Tanh": (np.tanh, {}),
    "Exp": (np.exp, {}),
    "Log": (np.log, {}),
    "Sqrt": (np.sqrt, {}),
    "Reciprocal": (lambda x: 1.0 / x, {}),
    "Abs": (np.abs, {}),
    "Neg": (np.negative, {}),
    "Sign": (np.sign, {}),
    "Floor": (np.floor, {}),
    "Ceil": (np.ceil, {}),
    "Round": (np.rint, {}),  # ONNX Round: half to even
    "Sin": (np.sin, {}),
    "Cos": (np.cos, {}),
    "Atan": (np.arctan, {}),
    "Erf": (_erf, {}),
    "Relu": (lambda x: np.maximum(x, 0.0), {}),
    "LeakyRelu": (lambda x, alpha: np.where(x >= 0, x, alpha * x), {"alpha": 0.01}),
    "Elu": (lambda x, alpha: np.where(x >= 0, x, alpha * np.expm1(x)), {"alpha": 1.0}),
    "Selu": (lambda x, alpha, gamma: gamma * np.where(x > 0, x, alpha * np.expm1(x)),
             {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "Celu": (lambda x, alpha: np.maximum(x, 0.0) + np.minimum(0.0, alpha * np.expm1(x / alpha)),
             {"alpha": 1.0}),
    "ThresholdedRelu": (lambda x, alpha: np.where(x > alpha, x, 0.0), {"alpha": 1.0}),
    "HardSigmoid": (_hard_sigmoid, {"alpha": 0.2, "beta": 0.5}),
    "HardSwish": (lambda x: x * _hard_sigmoid(x, 1.0 / 6.0, 0.5), {}),
    "Softplus": (_softplus, {}),
    "Softsign": (lambda x: x / (1.0 + np.abs(x)), {}),
    "Mish": (lambda x: x * np.tanh(_softplus(x)), {}),
    "Gelu": (_gelu, {"approximate": "none"}),
}

# ONNX op -> float64 function of two operands (numpy broadcasting; here scalars or
# two functions of the same tensor).
BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
    "Pow": np.power, "Max": np.maximum, "Min": np.minimum,
}


def function_table(f, s_x, z_x, s_y, z_y):
    """int8 table of y_q = Q(f32(f(DQ(x_q)))) for the 256 codes x_q (module docstring).

    f maps a float64 array of the 256 dequantized inputs to float64 values.
    Raises ValueError if f gives NaN for some input code.
    """
    x = dequantize(_CODES, s_x, z_x).astype(np.float64)
    with np.errstate(all="ignore"):  # overflow -> +-inf saturates; NaN is checked below
        v = np.asarray(f(x), dtype=np.float64)
        y = np.broadcast_to(v, x.shape).astype(np.float32)
    bad = np.flatnonzero(np.isnan(y))
    if bad.size:
        q = int(_CODES[bad[0]])
        raise ValueError(f"the function is NaN at input code {q} (real value {x[bad[0]]:.9g})")
    return quantize(y, s_y, z_y)
