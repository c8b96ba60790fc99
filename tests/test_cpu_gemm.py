"""backends/cpu_gemm.py: exact integer products on float32 BLAS vs plain int64."""
import numpy as np
import pytest

from synapse_gpu.backends.cpu_gemm import F32_EXACT, ExactGemm, chunk_splits, exact_matmul


def int64_matmul(a, b):
    return np.matmul(np.asarray(a, np.int64), np.asarray(b, np.int64))


def test_worst_case_magnitudes_long_reduction():
    """x = -128 with z_x = 127 and w = -128 with z_w = 127: every term is 255 * 255,
    partial sums pass 2^24 after 258 terms; K = 5000 needs 20 chunks."""
    K = 5000
    x, w = np.full((3, K), -128, np.int8), np.full((K, 4), -128, np.int8)
    a, b = x.astype(np.int32) - 127, w.astype(np.int32) - 127  # centred on z = 127
    expected = int64_matmul(a, b)
    assert expected[0, 0] == K * 255 * 255
    assert len(chunk_splits(b.T, 255)) - 1 == 20
    np.testing.assert_array_equal(exact_matmul(a, b, a_max=255), expected)
    # the test can fail: one float32 matmul over the whole K is not exact here
    assert not np.array_equal(np.matmul(a.astype(np.float32), b.astype(np.float32))
                              .astype(np.int64), expected)


@pytest.mark.parametrize("K", [1, 257, 258, 259, 4099])
def test_random_signs_at_full_magnitude(K):
    rng = np.random.default_rng(K)
    a = rng.choice([-255, 255], (17, K)).astype(np.int16)
    b = rng.choice([-255, 255], (K, 9)).astype(np.int16)
    np.testing.assert_array_equal(exact_matmul(a, b, a_max=255), int64_matmul(a, b))


def test_mixed_magnitudes_batched_and_a_max_from_data():
    rng = np.random.default_rng(3)
    a = rng.integers(-255, 256, (2, 3, 40, 1500)).astype(np.int16)
    b = (rng.standard_normal((1500, 70)) * 40).clip(-255, 255).astype(np.int16)
    np.testing.assert_array_equal(exact_matmul(a, b), int64_matmul(a, b))


@pytest.mark.parametrize("slab", [7, 1024])
def test_chunk_splits_are_in_bound_and_longest(slab):
    rng = np.random.default_rng(4)
    w = rng.integers(-255, 256, (3, 4, 3000))  # rows: all leading axes
    w_abs = np.abs(w).reshape(12, 3000)
    a_max = 255
    splits = chunk_splits(w, a_max, slab=slab)
    assert splits[0] == 0 and splits[-1] == 3000 and len(splits) > 2
    for k0, k1 in zip(splits[:-1], splits[1:]):
        assert a_max * w_abs[:, k0:k1].sum(axis=1).max() <= F32_EXACT
        if k1 < 3000:  # greedy: one more term would break the bound
            assert a_max * w_abs[:, k0:k1 + 1].sum(axis=1).max() > F32_EXACT
    # the per-row sums make chunks longer than the per-term bound 2^24 / (255 * 255)
    assert min(np.diff(splits[:-1])) > F32_EXACT // (255 * 255)
    assert chunk_splits(w, 0) == [0, 3000]
    assert chunk_splits(w[..., :10], a_max, slab=slab) == [0, 10]


@pytest.mark.parametrize("w", [[[64]], [[1, 64]]], ids=["first", "after-a-split"])
def test_a_term_beyond_float32_is_refused(w):
    with pytest.raises(ValueError):
        chunk_splits(np.array(w), 1 << 20)  # 2^20 * 64 = 2^26 > 2^24


@pytest.mark.parametrize("bias_scale", [0, 1000, 1 << 26], ids=["none", "small", "huge"])
@pytest.mark.parametrize("K", [300, 3000], ids=["one-chunk", "chunks"])
def test_rounded_is_the_exact_sum_rounded_once(K, bias_scale):
    """rounded() = f32(bias + W @ A) with a single rounding (ties to even)."""
    rng = np.random.default_rng([K, bias_scale])
    G, M, P = 2, 5, 33
    w = rng.integers(-255, 256, (G, M, K))
    a = rng.integers(-255, 256, (3, G, K, P))
    bias = None if bias_scale == 0 else rng.integers(-bias_scale, bias_scale + 1, G * M)
    gemm = ExactGemm(w, 255, bias)
    assert (len(gemm.splits) == 2) == (K == 300)
    exact = int64_matmul(w, a)
    if bias is not None:
        exact = exact + bias.reshape(G, M, 1)
    np.testing.assert_array_equal(gemm.exact(a.astype(np.float32)), exact)
    rounded = gemm.rounded(a.astype(np.float32))
    assert rounded.dtype == np.float32
    # int64 -> float64 is exact here (|v| < 2^53), float64 -> float32 rounds once
    np.testing.assert_array_equal(rounded, exact.astype(np.float64).astype(np.float32))


@pytest.mark.parametrize("bias", [1 << 24, (1 << 24) + 2, -(1 << 24) - 2, (1 << 26) + 8])
def test_rounded_ties_to_even(bias):
    """bias + 1 and bias + 3 sit exactly between two float32 values above 2^24."""
    gemm = ExactGemm(np.ones((1, 1, 1)), 3, np.array([bias]))
    got = gemm.rounded(np.array([[[1.0, 3.0, -1.0]]], np.float32))
    want = (np.array([1, 3, -1]) + bias).astype(np.float64).astype(np.float32)
    np.testing.assert_array_equal(got[0, 0], want)
