"""reference/take.py against python loops over every output element, zero tolerance."""
import itertools

import numpy as np
import pytest

from synapse_gpu.reference.take import take, take_shape_error

from ort_helpers import rand_i8, rng_for


def loop_take(x, lists):
    y = np.zeros((x.shape[0], *[len(v) for v in lists]), np.int8)
    for n in range(x.shape[0]):
        for o in itertools.product(*[range(len(v)) for v in lists]):
            y[(n, *o)] = x[(n, *[v[k] for v, k in zip(lists, o)])]
    return y


@pytest.mark.parametrize("shape,lists", [
    ((3, 5), [[4, 0, 2, 2]]),
    ((2, 4, 6), [[1, 2], [5, 3, 1]]),
    ((2, 3, 4, 5), [[0, 0, 2], [3, 2, 1, 0], [0, 1, 2, 3, 4, 4, 4]]),
    ((1, 2, 1, 3, 2), [[1, 0], [0, 0, 0], [2], [1, 0]]),
])
def test_take_equals_loops(shape, lists):
    x = rand_i8(rng_for(shape), shape)
    idx = np.concatenate(lists).astype(np.int32)
    sizes = [len(v) for v in lists]
    assert take_shape_error(shape, idx, sizes) is None
    np.testing.assert_array_equal(take(x, indices=idx, sizes=sizes), loop_take(x, lists))
    for i in range(shape[0]):  # batch invariance
        np.testing.assert_array_equal(take(x[i:i + 1], indices=idx, sizes=sizes),
                                      loop_take(x, lists)[i:i + 1])


def test_shape_errors():
    idx = np.array([0, 5], np.int32)
    assert "outside" in take_shape_error((1, 5), idx, [2])
    assert "sum of sizes" in take_shape_error((1, 5), idx, [3])
    assert "one positive size per axis" in take_shape_error((1, 5, 2), idx, [2])
