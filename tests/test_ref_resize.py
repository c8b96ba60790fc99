"""reference/resize.py against python integer loops over every output element."""
import itertools
from fractions import Fraction

import numpy as np
import pytest

from synapse_gpu.reference.requant import quantize_multiplier
from synapse_gpu.reference.resize import resize_linear

from ort_helpers import rand_i8, rng_for


def loop_resize(x, lists, frac, zx, zy, m, shift):
    k = len(lists)
    out = np.zeros((x.shape[0], *[len(w) for _, _, w in lists]), np.int8)
    for idx in np.ndindex(*out.shape):
        acc = 0
        for corner in itertools.product((0, 1), repeat=k):
            f, pos = 1, [idx[0]]
            for a, side in enumerate(corner):
                lo, hi, w = lists[a]
                o = idx[a + 1]
                pos.append(int(hi[o] if side else lo[o]))
                f *= int(w[o]) if side else (1 << frac[a]) - int(w[o])
            acc += f * (int(x[tuple(pos)]) - zx)
        y = round(Fraction(acc * m, 2 ** (shift + sum(frac)))) + zy  # half to even
        out[idx] = min(max(y, -128), 127)
    return out


@pytest.mark.parametrize("shape,sizes", [((2, 5), (9,)), ((2, 3, 4), (3, 7)), ((2, 2, 3, 4), (2, 5, 8))])
@pytest.mark.parametrize("q", [(0.05, -128, 0.05, -128), (0.03, 127, 0.04, -3), (0.02, 5, 0.1, 127)])
def test_resize_linear_equals_loops(shape, sizes, q):
    rng = rng_for(shape, q[1])
    x = rand_i8(rng, shape)
    frac = [0] + [30 // (len(sizes) - 1)] * (len(sizes) - 1) if len(sizes) > 1 else [30]
    lists = []
    for d, n, f in zip(shape[1:], sizes, frac):
        lo = rng.integers(0, d, n)
        lists.append((lo, np.minimum(lo + 1, d - 1), rng.integers(0, (1 << f) + 1, n)))
    lists[-1][2][0] = 1 << frac[-1]  # the hi side alone
    m, k = quantize_multiplier(np.float32(q[0]) / np.float32(q[2]))
    kw = dict(indices=np.concatenate([np.concatenate(v[:2]) for v in lists]).astype(np.int32),
              weights=np.concatenate([v[2] for v in lists]).astype(np.int32), sizes=list(sizes),
              frac_bits=frac,
              x_zero_point=q[1], y_zero_point=q[3], multiplier=int(m), shift=int(k))
    y = resize_linear(x, **kw)
    np.testing.assert_array_equal(y, loop_resize(x, lists, frac, q[1], q[3], int(m), int(k)))
    np.testing.assert_array_equal(resize_linear(x[1:], **kw), y[1:])
