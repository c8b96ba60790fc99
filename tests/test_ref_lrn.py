"""reference/lrn.py, zero tolerance.

Independent computation: the window sum of squares by a python loop per element and
the float64 formula of each output (lrn_codes) -- the thresholds must reproduce it for
every element, and for EVERY sum S of a few rows.
"""
import numpy as np
import pytest

from synapse_gpu.reference.lrn import NEVER, lrn, lrn_codes, lrn_params

from ort_helpers import rand_i8, rng_for

# (s_x, z_x, s_y, z_y, size, alpha, beta, bias): zero points at both ends; AlexNet's
# attributes (size 5, alpha 1e-4, beta 0.75) on large activations, and strong ones
PARAMS = [(0.5, -128, 0.4, -128, 5, 1e-4, 0.75, 1.0), (0.05, 127, 0.04, 127, 5, 0.3, 0.75, 2.0),
          (0.02, 3, 0.01, -5, 3, 0.9, 0.5, 1.0), (0.1, -20, 0.02, 11, 4, 0.05, 1.2, 0.5)]


def loop_expected(x, q):
    s_x, z_x, s_y, z_y, size, alpha, beta, bias = q
    d = x.astype(np.int64) - z_x
    S = np.zeros_like(d)
    C = x.shape[1]
    for c in range(C):
        for k in range(c - (size - 1) // 2, c + size - 1 - (size - 1) // 2 + 1):
            if 0 <= k < C:
                S[:, c] += d[:, k] ** 2
    return lrn_codes(S, d, s_x, s_y, z_y, size, alpha, beta, bias).astype(np.int8)


@pytest.mark.parametrize("q", PARAMS)
@pytest.mark.parametrize("shape", [(3, 8, 4, 5), (2, 3, 7), (2, 1, 6), (4, 12)])
def test_lrn_equals_loop_and_float64_rule(q, shape):
    x = rand_i8(rng_for(shape, q[1]), shape)
    p = lrn_params(*q[:5], *q[5:], channels=shape[1])
    y = lrn(x, size=q[4], x_zero_point=q[1], **p)
    np.testing.assert_array_equal(y, loop_expected(x, q))
    np.testing.assert_array_equal(lrn(x[1:2], size=q[4], x_zero_point=q[1], **p), y[1:2])
    clamped = lrn(x, size=q[4], x_zero_point=q[1], qmin=-20, qmax=90, **p)
    np.testing.assert_array_equal(clamped, np.clip(y, -20, 90))


@pytest.mark.parametrize("q", PARAMS[:2])
def test_thresholds_reproduce_every_sum(q):
    size = q[4]
    p = lrn_params(*q[:5], *q[5:])
    s_max = size * 255 * 255
    S = np.arange(s_max + 1)
    for code in (-128, -1, 0, 77, 127):
        r = code + 128
        th = p["thresholds"][r]
        assert (np.diff(th.astype(np.int64)) >= 0).all() and th.max() <= NEVER
        got = p["start"][r] + p["step"][r] * np.searchsorted(th, S, side="right")
        want = lrn_codes(S, np.full_like(S, code - q[1]), q[0], q[2], q[3], size, *q[5:])
        np.testing.assert_array_equal(got, want)
