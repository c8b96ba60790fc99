"""backends/cpu_pool.py: max_pool == reference, bit for bit, over random window configs."""
import numpy as np
import pytest

from synapse_gpu.backends import cpu_pool
from synapse_gpu.reference.pool import max_pool as ref_max_pool


def configs(rng, n):
    for _ in range(n):
        nd = int(rng.integers(1, 4))
        k = [int(v) for v in rng.integers(1, 4, nd)]
        yield nd, dict(kernel_shape=k, strides=[int(v) for v in rng.integers(1, 4, nd)],
                       dilations=[int(v) for v in rng.integers(1, 3, nd)],
                       pads=[int(v) for v in rng.integers(0, 4, 2 * nd)],  # may exceed the kernel
                       ceil_mode=int(rng.integers(0, 2)))


@pytest.mark.parametrize("seed", range(3))
def test_max_pool_matches_reference(seed):
    rng = np.random.default_rng(seed)
    checked = 0
    for nd, attrs in configs(rng, 60):
        x = rng.integers(-128, 128, (2, 3) + tuple(int(v) for v in rng.integers(1, 9, nd))).astype(np.int8)
        try:
            want = ref_max_pool(x, **attrs)
        except (ValueError, IndexError):
            continue  # a window config the reference refuses
        if want.size == 0:
            continue
        got = cpu_pool.max_pool(x, **attrs)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want, err_msg=str(attrs))
        checked += 1
    assert checked > 30


def test_max_pool_empty_windows_give_minus_128():
    x = np.full((1, 1, 3, 3), 50, np.int8)
    attrs = dict(kernel_shape=[1, 1], strides=[2, 2], pads=[2, 2, 2, 2], dilations=[1, 1], ceil_mode=0)
    y = cpu_pool.max_pool(x, **attrs)
    np.testing.assert_array_equal(y, ref_max_pool(x, **attrs))
    assert y.min() == -128 and y.max() == 50


@pytest.mark.parametrize("seed", range(3))
def test_avg_pool_matches_reference(seed):
    from synapse_gpu.reference.pool import avg_pool as ref_avg_pool
    from synapse_gpu.reference.requant import quantize_multiplier

    rng = np.random.default_rng(100 + seed)
    checked = 0
    for nd, attrs in configs(rng, 60):
        V = int(np.prod(attrs["kernel_shape"]))
        M = (np.float32(rng.uniform(0.3, 3.0)) / np.maximum(np.arange(V + 1), 1)).astype(np.float32)
        m, k = quantize_multiplier(M)
        attrs.update(multiplier=m, shift=k, x_zero_point=int(rng.integers(-128, 128)),
                     y_zero_point=int(rng.integers(-128, 128)), count_include_pad=int(rng.integers(0, 2)),
                     qmin=int(rng.choice([-128, 0])), qmax=127)
        x = rng.integers(-128, 128, (2, 3) + tuple(int(v) for v in rng.integers(1, 9, nd))).astype(np.int8)
        try:
            want = ref_avg_pool(x, **attrs)
        except (ValueError, IndexError):
            continue
        if want.size == 0:
            continue
        got = cpu_pool.avg_pool(x, **attrs)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want, err_msg=str(attrs))
        checked += 1
    assert checked > 30
