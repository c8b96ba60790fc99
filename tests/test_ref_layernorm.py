"""reference/layernorm.py against python integers and exact rationals, zero tolerance,
and the integer rule against the float formula (within one step)."""
import math
from fractions import Fraction

import numpy as np
import pytest

from synapse_gpu.reference.layernorm import isqrt, layernorm, layernorm_params

from ort_helpers import rand_i8, rng_for

F32 = np.float32


def scalar_layernorm(x, g, b, axis, eps_term, shift, zx, zy, qmin=-128, qmax=127):
    n = math.prod(x.shape[axis:])
    rows = x.reshape(-1, n).astype(int).tolist()
    out = []
    for row in rows:
        d = [v - zx for v in row]
        s1, s2 = sum(d), sum(v * v for v in d)
        V = n * s2 - s1 * s1 + eps_term
        P = max(0, (60 - V.bit_length()) // 2)
        D = max(1, math.isqrt(V * 4 ** P))
        for i, di in enumerate(d):
            z = round(Fraction((n * di - s1) * 2 ** (P + 16), D))  # round: half to even
            k = (len(out) // n) % g.shape[0]  # the row's gains: row index mod K
            gi, bi = (int(t[k, i if t.shape[1] > 1 else 0]) for t in (g, b))
            y = round(Fraction(z * gi + bi, 2 ** (16 + shift))) + zy
            out.append(min(max(y, qmin), qmax))
    return np.array(out, np.int8).reshape(x.shape)


CASES = [((3, 8), 1), ((2, 5, 16), -1), ((2, 3, 4, 6), 2), ((2, 1, 7), -1), ((2, 3, 64), 2)]
QS = [(0.05, -128, 0.03, 127), (0.02, 127, 0.05, -128), (0.1, 9, 0.02, -3)]


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("q", QS)
def test_layernorm_equals_python_integers(shape, axis, q):
    s_x, zx, s_y, zy = q
    rng = rng_for(shape, zx)
    x = rand_i8(rng, shape)
    x[0] = zx  # a constant row: var = 0, eps alone
    n = math.prod(shape[axis % len(shape):])
    gamma = rng.uniform(0.2, 2.0, n) * rng.choice([-1, 1], n)
    beta = rng.normal(0, 0.5, n)
    p, a = layernorm_params(gamma, beta, 1e-5, s_x, s_y)
    y = layernorm(x, axis=axis, x_zero_point=zx, y_zero_point=zy, **p, **a)
    assert p["g"].shape == (1, n)
    np.testing.assert_array_equal(y, scalar_layernorm(x, p["g"], p["b"], axis % len(shape),
                                                      a["eps_term"], a["shift"], zx, zy))
    np.testing.assert_array_equal(layernorm(x[1:2], axis=axis, x_zero_point=zx, y_zero_point=zy,
                                            **p, **a), y[1:2])
    # the float formula, quantized: within one step (Q16 and 23-bit gains)
    r = (x.astype(np.float64) - zx) * F32(s_x)
    ax = tuple(range(axis % len(shape), len(shape)))
    f = (r - r.mean(ax, keepdims=True)) / np.sqrt(r.var(ax, keepdims=True) + F32(1e-5))
    f = f * gamma.astype(F32).reshape(shape[axis % len(shape):]) + beta.astype(F32).reshape(
        shape[axis % len(shape):])
    want = np.clip(np.rint(f / F32(s_y)) + zy, -128, 127)
    assert np.abs(y - want).max() <= 1


@pytest.mark.parametrize("K,m", [(4, 1), (2, 30)])  # instance norm (a gain per row), group norm
def test_row_gains_equal_python_integers(K, m):
    x = rand_i8(rng_for(K, m), (3, 4, 30))
    rng = rng_for(m)
    gamma, beta = rng.uniform(-2, 2, (K, m)), rng.normal(0, 0.5, (K, m))
    p, a = layernorm_params(gamma, beta, 1e-5, 0.05, 0.04, n=30)
    assert p["g"].shape == (K, m)
    y = layernorm(x, axis=2, x_zero_point=-3, y_zero_point=5, **p, **a)
    np.testing.assert_array_equal(y, scalar_layernorm(x, p["g"], p["b"], 2, a["eps_term"],
                                                      a["shift"], -3, 5))


def test_isqrt_exact_at_squares_and_large_values():
    v = np.array([0, 1, 2, 3, 4, 15, 16, 17, (1 << 31) ** 2 - 1, (1 << 31) ** 2, 2 ** 62,
                  (3037000499 ** 2) - 1], np.int64)
    assert [int(r) for r in isqrt(v)] == [math.isqrt(int(t)) for t in v]
    rng = np.random.default_rng(1)
    w = rng.integers(0, 2 ** 62, 10000, dtype=np.int64)
    assert [int(r) for r in isqrt(w)] == [math.isqrt(int(t)) for t in w]


def test_params_bounds():
    with pytest.raises(ValueError):
        layernorm_params(np.ones(5000), np.zeros(5000), 1e-5, 0.1, 0.1)
    p, a = layernorm_params(np.ones(8), np.full(8, 1e6), 1e-5, 0.1, 0.1)
    assert np.abs(p["b"]).max() < 2 ** 47 and 0 <= a["shift"] <= 22
