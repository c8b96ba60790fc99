"""reference/unary.py: tables of float functions of one int8 tensor, zero tolerance.

Independent computation: python scalars and the math module, one code at a time
(DequantizeLinear in float32, the function in float64, one rounding to float32,
QuantizeLinear), for every op of UNARY and the chains the importer recognises.
"""
import math

import numpy as np
import pytest

from synapse_gpu.reference import unary
from synapse_gpu.reference.unary import function_table

F32 = np.float32


def _exp(v):
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _sig(v):
    return 1 / (1 + _exp(-v)) if v >= 0 else _exp(v) / (1 + _exp(v))


def _softplus(v):
    return v + math.log1p(_exp(-v)) if v > 0 else math.log1p(_exp(v))


def _hsig(v, a=0.2, b=0.5):
    return min(max(a * v + b, 0.0), 1.0)


A = float(F32(0.3))  # a float32 attribute value
SCALAR = {  # name -> (python scalar function, the float64 function under test)
    "Sigmoid": (_sig, unary.UNARY["Sigmoid"][0]),
    "Tanh": (math.tanh, np.tanh),
    "Exp": (_exp, np.exp),
    "Erf": (math.erf, unary.UNARY["Erf"][0]),
    "Atan": (math.atan, np.arctan),
    "Softplus": (_softplus, unary.UNARY["Softplus"][0]),
    "Softsign": (lambda v: v / (1 + abs(v)), unary.UNARY["Softsign"][0]),
    "Mish": (lambda v: v * math.tanh(_softplus(v)), unary.UNARY["Mish"][0]),
    "HardSigmoid": (lambda v: _hsig(v, A, 0.5), lambda x: unary.UNARY["HardSigmoid"][0](x, A, 0.5)),
    "HardSwish": (lambda v: v * _hsig(v, 1 / 6, 0.5), unary.UNARY["HardSwish"][0]),
    "Gelu": (lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))), unary.UNARY["Gelu"][0]),
    "Gelu tanh": (lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))),
                  lambda x: unary.UNARY["Gelu"][0](x, "tanh")),
    "Elu": (lambda v: v if v >= 0 else A * math.expm1(v), lambda x: unary.UNARY["Elu"][0](x, A)),
    "Selu": (lambda v: 1.0507009873554805 * (v if v > 0 else 1.6732632423543772 * math.expm1(v)),
             lambda x: unary.UNARY["Selu"][0](x, *unary.UNARY["Selu"][1].values())),
    "Celu": (lambda v: max(v, 0) + min(0, A * math.expm1(v / A)), lambda x: unary.UNARY["Celu"][0](x, A)),
    "LeakyRelu": (lambda v: v if v >= 0 else A * v, lambda x: unary.UNARY["LeakyRelu"][0](x, A)),
    "ThresholdedRelu": (lambda v: v if v > A else 0.0, lambda x: unary.UNARY["ThresholdedRelu"][0](x, A)),
    "Round": (lambda v: float(round(v)), np.rint),  # python round: half to even
    "SiLU": (lambda v: v * _sig(v), lambda x: x * unary.UNARY["Sigmoid"][0](x)),
}


def scalar_table(f, s_x, z_x, s_y, z_y):
    out = []
    for q in range(-128, 128):
        x = float(F32(F32(q - z_x) * F32(s_x)))
        y = float(F32(f(x)))  # float64 -> float32, nearest
        r = float(F32(F32(y) / F32(s_y)))
        out.append(127 if r == math.inf else -128 if r == -math.inf else
                   min(max(round(r) + z_y, -128), 127))
    return np.array(out, dtype=np.int8)


PARAMS = [(0.05, -128, 1 / 256, -128), (0.031, 127, 0.02, 127), (2.0 ** -4, 3, 0.0117, -37),
          (0.37, 0, 0.5, 0), (0.004, -7, 2.0 ** -7, 101)]


@pytest.mark.parametrize("name", sorted(SCALAR))
@pytest.mark.parametrize("s_x,z_x,s_y,z_y", PARAMS)
def test_function_table_equals_scalar_construction(name, s_x, z_x, s_y, z_y):
    scalar, f = SCALAR[name]
    np.testing.assert_array_equal(function_table(f, F32(s_x), z_x, F32(s_y), z_y),
                                  scalar_table(scalar, s_x, z_x, s_y, z_y))


def test_every_unary_op_has_a_scalar_check():
    assert set(unary.UNARY) - set(SCALAR) <= {"Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Sign",
                                             "Floor", "Ceil", "Sin", "Cos", "Relu"}


def test_overflow_saturates_and_nan_is_refused():
    t = function_table(np.exp, F32(1.0), -128, F32(1.0), 0)  # exp(255) is past float32
    assert t[-1] == 127 and t[0] == 1
    with pytest.raises(ValueError, match="NaN at input code -128"):
        function_table(np.log, F32(0.1), 0, F32(0.1), 0)
    t = function_table(np.log, F32(0.1), -128, F32(0.1), 0)  # log(0) = -inf saturates
    assert t[0] == -128
