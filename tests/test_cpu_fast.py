"""backends/cpu_conv.py (fast conv, dense, float32 requantization) == reference, bit for bit."""
import tracemalloc

import numpy as np
import pytest
from test_ref_conv import SHAPES, ZERO_POINTS, make_case
from test_ref_dense import X_SHAPES, dense_case
from test_ref_dense import ZERO_POINTS as DENSE_ZERO_POINTS

from synapse_gpu.backends import cpu_conv
from synapse_gpu.reference.conv import conv as ref_conv
from synapse_gpu.reference.dense import dense as ref_dense
from synapse_gpu.reference.requant import quantize_multiplier, requant

F32 = np.float32


def fast_requant(acc, m, k, zp, qmin=-128, qmax=127):
    """requant_f32 as the backend uses it: t = f32(acc) (one rounding), then M32."""
    M = cpu_conv.multiplier_f32(m, k)
    assert M is not None
    t = np.asarray(acc, np.int64).astype(np.float64).astype(F32)  # exact, then one rounding
    out = np.empty(t.shape, np.int8)
    cpu_conv.requant_f32(t, M, zp, qmin, qmax, out)
    return out


def test_requant_f32_random_millions():
    rng = np.random.default_rng(11)
    n = 2_000_000
    # accumulators over the whole int32 range, log-uniform magnitudes, both signs
    mag = np.exp2(rng.uniform(0, 31, n)).astype(np.int64)
    acc = np.where(rng.random(n) < 0.5, -mag, mag).clip(-(1 << 31), (1 << 31) - 1)
    # float32 multipliers from 2^-150 (below the subnormals) to 2^40 (saturating)
    M = (np.exp2(rng.uniform(-150, 40, n)) * rng.uniform(1, 2, n)).astype(F32)
    M[M == 0] = F32(2.0 ** -149)
    m, k = quantize_multiplier(M)
    zp = rng.integers(-128, 128, n)
    qmin = rng.choice([-128, -128, -20, 0], n)
    qmax = np.maximum(qmin, rng.choice([127, 127, 60, 0], n))
    np.testing.assert_array_equal(fast_requant(acc, m, k, zp, qmin, qmax),
                                  requant(acc, m, k, zp, qmin, qmax))


def test_requant_f32_realistic_multipliers():
    """The usual regime: M in [2^-20, 2^-5], accumulators that land inside the range."""
    rng = np.random.default_rng(12)
    n = 1_000_000
    M = rng.uniform(2.0 ** -20, 2.0 ** -5, n).astype(F32)
    m, k = quantize_multiplier(M)
    acc = (rng.standard_normal(n) * 100 / M.astype(np.float64)).clip(-2**31, 2**31 - 1)
    acc = acc.astype(np.int64)
    zp = rng.integers(-128, 128, n)
    y = requant(acc, m, k, zp)
    assert np.mean((y > -128) & (y < 127)) > 0.5
    np.testing.assert_array_equal(fast_requant(acc, m, k, zp), y)


def test_requant_f32_edges():
    accs = np.array([0, 1, -1, 2, -2, 3, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, (1 << 24) + 3,
                     -(1 << 24) - 1, (1 << 25) + 2, (1 << 31) - 1, -(1 << 31), -(1 << 31) + 1,
                     (1 << 30) + 64, 12345678, -87654321], np.int64)
    Ms = [0.0, 2.0 ** -149, 2.0 ** -140, 2.0 ** -127, 2.0 ** -126, 2.0 ** -60, 2.0 ** -31,
          2.0 ** -24, 2.0 ** -23, 0.5, 0.75, 1.0, 1.5, 2.0 ** 10, 2.0 ** 40, 2.0 ** 100,
          2.0 ** 127, float(np.finfo(F32).max), 0.1, 1 / 3, 0.999999, 1.0000001]
    M = np.array(Ms, F32)
    zps = np.array([-128, -1, 0, 1, 127])
    acc, M, zp = (v.ravel() for v in np.meshgrid(accs, M, zps, indexing="ij"))
    m, k = quantize_multiplier(M)
    np.testing.assert_array_equal(fast_requant(acc, m, k, zp), requant(acc, m, k, zp))
    for lo, hi in ((-20, 127), (-20, 60), (0, 0)):
        np.testing.assert_array_equal(fast_requant(acc, m, k, zp, lo, hi),
                                      requant(acc, m, k, zp, lo, hi))


def test_requant_f32_exact_ties():
    """acc * 2^-s = n + 1/2 exactly: round half to even, then the zero point (odd too)."""
    rng = np.random.default_rng(13)
    s = rng.integers(1, 20, 200_000)
    n = rng.integers(-300, 300, s.size)
    acc = (2 * n + 1) << (s - 1)
    keep = np.abs(acc) < (1 << 31)
    acc, s = acc[keep], s[keep]
    m, k = quantize_multiplier(np.ldexp(np.ones(s.size), -s).astype(F32))
    zp = rng.integers(-128, 128, s.size)
    np.testing.assert_array_equal(fast_requant(acc, m, k, zp), requant(acc, m, k, zp))
    # and ties at the 24-bit rounding of acc * m: m odd, acc with 2 low bits set
    m = rng.integers(1 << 23, 1 << 24, 200_000) | 1
    acc = rng.integers(1 << 20, 1 << 22, m.size) * 4 + 3
    k = np.full(m.size, 40)
    np.testing.assert_array_equal(fast_requant(acc, m, k, 0), requant(acc, m, k, 0))


def test_multiplier_f32_refuses_non_float32_values():
    assert cpu_conv.multiplier_f32(np.array([3 << 20]), np.array([30])) is not None
    assert cpu_conv.multiplier_f32(np.array([1 << 24]), np.array([30])) is None  # 25 bits
    assert cpu_conv.multiplier_f32(np.array([(1 << 23) + 1]), np.array([170])) is None  # < 2^-149
    assert cpu_conv.multiplier_f32(np.array([1 << 23]), np.array([-110])) is None  # > f32 max


BATCHES = [1, 3]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("zps", ZERO_POINTS, ids=[z[0] for z in ZERO_POINTS])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_fast_conv_equals_reference(shape, zps, per_channel, batch):
    rng = np.random.default_rng([SHAPES.index(shape), ZERO_POINTS.index(zps), per_channel, batch])
    shape = (shape[0], batch) + shape[2:]
    x, p = make_case(rng, shape, zps, per_channel)
    np.testing.assert_array_equal(cpu_conv.conv(x, **p), ref_conv(x, **p))


def _long_reduction_case(rng, C=256, zx=-128, bias_scale=20000):
    x = rng.integers(-128, 128, (2, C, 5, 6)).astype(np.int8)
    w = rng.integers(-128, 128, (8, C, 3, 3)).astype(np.int8)
    m, k = quantize_multiplier(rng.uniform(1e-6, 4e-6, 8).astype(F32))
    return x, dict(w=w, bias=rng.integers(-bias_scale, bias_scale, 8).astype(np.int32),
                   multiplier=m, shift=k, w_zero_point=np.full(8, 127, np.int32),
                   x_zero_point=zx, y_zero_point=3, strides=[1, 1], pads=[1, 1, 1, 1],
                   dilations=[1, 1], group=1)


@pytest.mark.parametrize("bias_scale", [20000, 1 << 30], ids=["bias-f32-exact", "bias-huge"])
@pytest.mark.parametrize("zx", [-128, 127])
def test_fast_conv_several_chunks(zx, bias_scale):
    """K = 2304 with |w - zw| up to 255 and |x - zx| up to 255: many float32 chunks."""
    x, p = _long_reduction_case(np.random.default_rng(21), zx=zx, bias_scale=bias_scale)
    prepared = cpu_conv.prepare_conv(**p)
    assert len(prepared.gemm.splits) > 5
    y = prepared(x)
    np.testing.assert_array_equal(y, ref_conv(x, **p))
    if bias_scale < 1 << 24:  # a huge bias saturates most outputs
        assert len(np.unique(y)) > 50


@pytest.mark.parametrize("bias_scale", [100, 1 << 30], ids=["bias-f32-exact", "bias-huge"])
def test_fast_conv_one_chunk_bias(bias_scale):
    rng = np.random.default_rng(22)
    x, p = make_case(rng, SHAPES[3], ZERO_POINTS[3], True)
    p["bias"] = rng.integers(-bias_scale, bias_scale, p["w"].shape[0]).astype(np.int32)
    p["multiplier"], p["shift"] = quantize_multiplier(
        np.full(p["w"].shape[0], 40 / (bias_scale + 3e5), F32))
    assert len(cpu_conv.prepare_conv(**p).gemm.splits) == 2
    np.testing.assert_array_equal(cpu_conv.conv(x, **p), ref_conv(x, **p))


def test_fast_conv_blocks(monkeypatch):
    """Small column budgets: blocks of images, then blocks of output rows of one image."""
    rng = np.random.default_rng(23)
    x, p = make_case(rng, ("b", 5, 4, 6, (9, 7), (3, 3), (2, 1), [1, 1, 2, 1], (1, 1), 1),
                     ZERO_POINTS[3], True)
    expected = ref_conv(x, **p)
    per_image_bytes = 4 * 4 * 9 * 6 * 7
    for budget in (3 * per_image_bytes, per_image_bytes // 2, 1):
        monkeypatch.setattr(cpu_conv, "BLOCK_BYTES", budget)
        np.testing.assert_array_equal(cpu_conv.conv(x, **p), expected)


def test_fast_conv_falls_back_when_a_multiplier_is_not_float32():
    rng = np.random.default_rng(24)
    x, p = make_case(rng, SHAPES[3], ZERO_POINTS[3], True)
    p["multiplier"] = p["multiplier"].copy()
    p["multiplier"][0], p["shift"] = (1 << 23) + 1, p["shift"].copy()
    p["shift"][0] = 160  # M = m * 2^-160 is below float32's smallest subnormal
    prepared = cpu_conv.prepare_conv(**p)
    assert prepared.M32 is None
    np.testing.assert_array_equal(prepared(x), ref_conv(x, **p))


def test_prepared_conv_reuse_and_batch_invariance():
    """One prepared conv serves any batch and (with 'same' pads) any spatial size; sample
    i's output never depends on the other samples."""
    rng = np.random.default_rng(25)
    x, p = make_case(rng, ("same", 4, 6, 6, (9, 8), (3, 3), (2, 2), "same_upper", (1, 1), 2),
                     ZERO_POINTS[1], True)
    prepared = cpu_conv.prepare_conv(**p)
    y = prepared(x)
    np.testing.assert_array_equal(y, ref_conv(x, **p))
    for i in range(4):
        np.testing.assert_array_equal(prepared(x[i:i + 1]), y[i:i + 1])
    x2 = rng.integers(-128, 128, (2, 6, 5, 11)).astype(np.int8)
    np.testing.assert_array_equal(prepared(x2), ref_conv(x2, **p))
    with pytest.raises(ValueError):
        prepared(x[:, :3])


def test_resnet_stem_batch8_memory_is_bounded():
    """Batch 8 of ResNet-50's 7x7/2 stem: the 59 MB of columns are built in blocks."""
    rng = np.random.default_rng(26)
    x = rng.integers(-128, 128, (8, 3, 224, 224)).astype(np.int8)
    w = rng.integers(-127, 128, (64, 3, 7, 7)).astype(np.int8)
    m, k = quantize_multiplier(np.full(64, 1e-4, F32))
    p = dict(w=w, bias=rng.integers(-5000, 5000, 64).astype(np.int32), multiplier=m, shift=k,
             w_zero_point=np.zeros(64, np.int32), x_zero_point=-10, y_zero_point=-3,
             strides=[2, 2], pads=[3, 3, 3, 3], dilations=[1, 1], group=1)
    prepared = cpu_conv.prepare_conv(**p)
    tracemalloc.start()
    y = prepared(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out_bytes = y.nbytes
    assert peak < 2.5 * cpu_conv.BLOCK_BYTES + 6 * out_bytes, peak
    np.testing.assert_array_equal(y[5:6], ref_conv(x[5:6], **p))


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("trans_w", [0, 1], ids=["w-KM", "w-MK"])
@pytest.mark.parametrize("zps", DENSE_ZERO_POINTS, ids=[z[0] for z in DENSE_ZERO_POINTS])
@pytest.mark.parametrize("x_shape", X_SHAPES + [(3, 3000)], ids=str)
def test_fast_dense_equals_reference(x_shape, zps, trans_w, per_channel):
    rng = np.random.default_rng([x_shape[-1], DENSE_ZERO_POINTS.index(zps), trans_w,
                                 per_channel])
    x, p = dense_case(rng, x_shape, 11, zps, trans_w, per_channel)
    prepared = cpu_conv.prepare_dense(**p)
    if x_shape[-1] == 3000 and zps[2] != "zero":
        assert len(prepared.gemm.splits) > 2
    np.testing.assert_array_equal(prepared(x), ref_dense(x, **p))
    np.testing.assert_array_equal(cpu_conv.dense(x, **p), ref_dense(x, **p))
