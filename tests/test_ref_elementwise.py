"""reference/elementwise.py against independent computations, zero tolerance.

Independent computations: the float32 formula of requant evaluated by numpy
(IEEE), exact rationals (fractions.Fraction, python ints), plain per-channel
loops, and ONNX Runtime where its rule is ours (Clip; QLinearAdd / QLinearMul
wherever its float arithmetic is exact). Agreement with ONNX Runtime elsewhere is
measured and printed (pytest -s -k onnxruntime), docs/ops_rules.md records it.
"""
from fractions import Fraction

import numpy as np
import pytest

from synapse_gpu.reference.elementwise import (add, add_params, batchnorm, clip, identity, mul,
                                               prelu, relu, requantize)
from synapse_gpu.reference.requant import (quantize_multiplier, requant, requant_zp_inside,
                                           round_shift, round_shift_zp)
from ort_helpers import agreement, ort_node, rand_i8, rng_for

F32 = np.float32
ZPS = [-128, -37, 0, 1, 127]
CLAMPS = [(-128, 127), (-20, 100), (0, 127)]






def float_rq(acc, M, z, qmin=-128, qmax=127):
    """requant as the float32 formula: clamp(rint(f32(f32(acc) * M)) + z)."""
    p = np.asarray(acc).astype(F32) * np.asarray(M, dtype=F32)
    return np.clip(np.rint(p) + z, qmin, qmax).astype(np.int8)


def float_rq_zp_inside(acc, M, z, qmin=-128, qmax=127):
    """clamp(rint(f32(f32(acc) * M) + z)): the float64 sum of a float32 and a small
    integer is exact wherever a tie is possible."""
    p = (np.asarray(acc).astype(F32) * np.asarray(M, dtype=F32)).astype(np.float64)
    return np.clip(np.rint(p + z), qmin, qmax).astype(np.int8)


def mk(M):
    m, k = quantize_multiplier(M)
    return m, k






# ---- requantize, batchnorm, prelu --------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 5, 3)])
@pytest.mark.parametrize("zx", ZPS)
@pytest.mark.parametrize("zy", [-128, 3, 127])
def test_requantize(shape, zx, zy):
    rng = rng_for(shape, zx, zy)
    x = rand_i8(rng, shape)
    for M in [F32(0.5), F32(1.0), F32(rng.uniform(0.01, 3)), F32(2.0 ** -12)]:
        m, k = mk(M)
        for qmin, qmax in CLAMPS:
            got = requantize(x, x_zero_point=zx, y_zero_point=zy, multiplier=m, shift=k, qmin=qmin, qmax=qmax)
            np.testing.assert_array_equal(got, float_rq(x.astype(np.int64) - zx, M, zy, qmin, qmax))


@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 5), (1, 3, 4, 4), (2, 2, 3, 2, 2)])
@pytest.mark.parametrize("zx,zy", [(-128, 127), (127, -128), (0, 0), (-37, 5)])
def test_batchnorm(shape, zx, zy):
    rng = rng_for(shape, zx, zy)
    C = shape[1]
    x = rand_i8(rng, shape)
    scale = rng.integers(-128, 128, C).astype(np.int8)
    scale[0] = -128
    bias = rng.integers(-(2 ** 20), 2 ** 20, C).astype(np.int32)
    bias[-1] = 2 ** 31 - 1 - 255 * 128  # the largest bias the int32 bound admits
    Ms = (2.0 ** rng.uniform(-22, -8, C)).astype(F32)
    m, k = mk(Ms)
    for qmin, qmax in CLAMPS:
        got = batchnorm(x, scale=scale, bias=bias, multiplier=m, shift=k, x_zero_point=zx,
                        y_zero_point=zy, qmin=qmin, qmax=qmax)
        for c in range(C):  # one channel at a time, plain int64 formula
            acc = (x[:, c].astype(np.int64) - zx) * int(scale[c]) + int(bias[c])
            assert np.abs(acc).max() < 2 ** 31
            np.testing.assert_array_equal(got[:, c], float_rq(acc, Ms[c], zy, qmin, qmax))


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 5), (2, 2, 3, 3)])
@pytest.mark.parametrize("zx,zy", [(-128, -128), (127, 127), (-5, 11), (0, 0)])
def test_prelu(shape, zx, zy):
    rng = rng_for(shape, zx, zy)
    C = shape[1]
    x = rand_i8(rng, shape)
    slope = rng.integers(-128, 128, C).astype(np.int8)
    slope[0], slope[-1] = 0, -128
    s_x, s_y = F32(0.05), F32(rng.uniform(0.02, 0.2))
    s_slope = rng.uniform(0.001, 0.01, C).astype(F32)  # per channel
    pos_M = F32(s_x / s_y)
    neg_M = ((s_x * s_slope).astype(F32) / s_y).astype(F32)
    pm, pk = mk(pos_M)
    nm, nk = mk(neg_M)
    for qmin, qmax in CLAMPS:
        got = prelu(x, slope=slope, multiplier=nm, shift=nk, x_zero_point=zx, y_zero_point=zy,
                    pos_multiplier=pm, pos_shift=pk, qmin=qmin, qmax=qmax)
        for idx in np.ndindex(*shape):  # element by element, python ints
            d = int(x[idx]) - zx
            c = idx[1]
            want = float_rq(d, pos_M, zy, qmin, qmax) if d >= 0 else \
                float_rq(d * int(slope[c]), neg_M[c], zy, qmin, qmax)
            assert got[idx] == want, (idx, d)


# ---- relu, clip, identity ------------------------------------------------------------


@pytest.mark.parametrize("zx", ZPS)
def test_relu(zx):
    x = np.arange(-128, 128, dtype=np.int8).reshape(2, 128)
    got = relu(x, x_zero_point=zx)
    assert got.dtype == np.int8
    assert [int(v) for v in got.ravel()] == [max(int(v), zx) for v in x.ravel()]


@pytest.mark.parametrize("qmin,qmax", [(-128, 127), (-128, -128), (127, 127), (-3, 9), (0, 127)])
def test_clip_equals_onnxruntime(qmin, qmax):
    x = rand_i8(rng_for(qmin, qmax), (2, 3, 17))
    want = ort_node("Clip", ["x", "lo", "hi"], {"x": x}, {"lo": np.int8(qmin), "hi": np.int8(qmax)})
    np.testing.assert_array_equal(clip(x, qmin=qmin, qmax=qmax), want)


def test_identity_copies():
    x = rand_i8(np.random.default_rng(0), (2, 5))
    y = identity(x)
    np.testing.assert_array_equal(y, x)
    assert y is not x and not np.shares_memory(x, y)


# ---- the zero-point-inside rounding -----------------------------------------------------


def test_round_shift_zp_edges():
    v = np.array([1, 3, 5, -1, -3, -5, 2, 0, 2 ** 62 + 2 ** 61, -(2 ** 62) - 2 ** 61], dtype=np.int64)
    for z in [-128, -3, 0, 1, 127]:
        for s in [0, 1, 2, 40, 62]:
            got = round_shift_zp(v, s, z)
            want = [round(Fraction(int(x), 2 ** s) + z) for x in v]  # python round: half to even
            assert [int(g) for g in got] == want, (z, s)
    # s < 0 scales up exactly (and saturation is left to the clamp)
    np.testing.assert_array_equal(round_shift_zp(np.array([3, -2]), -2, 1), [13, -7])
    # ties go to the even OUTPUT code: 0.5 + 1 -> 2, 1.5 + 1 -> 2, -0.5 + 1 -> 0
    np.testing.assert_array_equal(round_shift_zp(np.array([1, 3, -1]), 1, 1), [2, 2, 0])


@pytest.mark.parametrize("z", [-128, -7, 0, 8, 127])
def test_requant_zp_inside_matches_float_formula(z):
    rng = rng_for(z)
    acc = np.concatenate([rng.integers(-(2 ** 31), 2 ** 31, 50000),
                          rng.integers(-3000, 3000, 50000), [0, -(2 ** 31), 2 ** 31 - 1]]).astype(np.int64)
    for M in [F32(0.5), F32(0.25), F32(2.0 ** -25), F32(rng.uniform(1e-4, 1)), F32(3e-12), F32(1e-45),
              F32(2.0 ** 24), F32(0.0)]:
        m, k = mk(M)
        np.testing.assert_array_equal(requant_zp_inside(acc, m, k, z), float_rq_zp_inside(acc, M, z))


# ---- add, mul --------------------------------------------------------------------------

BROADCAST = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((2, 1, 4), (1, 3, 1)), ((4,), (2, 3, 4))]


def _f32(q):
    """A rational rounded once to float32, ties to even: the nearer of the two float32
    neighbours of q, compared exactly (F32(float(q)) could round twice)."""
    x = F32(float(q))
    lo, hi = (np.nextafter(x, F32(-np.inf)), x) if Fraction(float(x)) > q else \
        (x, np.nextafter(x, F32(np.inf)))
    dlo, dhi = q - Fraction(float(lo)), Fraction(float(hi)) - q
    if dlo != dhi:
        return float(lo if dlo < dhi else hi)
    return float(lo if int(lo.view(np.int32)) % 2 == 0 else hi)


def fma_add(a, b, sa, za, sb, zb, sy, zy, off, a_first, qmin, qmax):
    """QLinearAdd as MLAS computes it, in exact rationals: fma(outer, R, fma(inner, R, F)),
    each fma rounded once to float32, then rounded half to even to an integer."""
    ra, rb = Fraction(float(F32(F32(sa) / F32(sy)))), Fraction(float(F32(F32(sb) / F32(sy))))
    za, zb, zy = za + off, zb + off, zy + off
    (r1, z1), (r2, z2) = ((rb, zb), (ra, za)) if a_first else ((ra, za), (rb, zb))
    F = Fraction(_f32(zy - Fraction(_f32(r1 * z1 + Fraction(_f32(r2 * z2))))))
    a, b = np.broadcast_arrays(a.astype(np.int64) + off, b.astype(np.int64) + off)
    out = []
    for x, y in zip(a.ravel(), b.ravel()):
        (p, P), (q, Q) = ((int(x), ra), (int(y), rb)) if a_first else ((int(y), rb), (int(x), ra))
        t = Fraction(_f32(p * P + F))
        out.append(min(max(round(Fraction(_f32(q * Q + t))) - off, qmin), qmax))
    return np.array(out, dtype=np.int8).reshape(a.shape)


@pytest.mark.parametrize("sa,sb", BROADCAST)
@pytest.mark.parametrize("za,zb,zy", [(-128, 127, 1), (127, -128, -128), (0, 0, 127), (-37, 5, -3)])
@pytest.mark.parametrize("off,a_first", [(0, 0), (128, 0), (0, 1)])
def test_add_is_the_float32_fma_computation(sa, sb, za, zb, zy, off, a_first):
    rng = rng_for(sa, sb, za, zb, zy, off, a_first)
    a, b = rand_i8(rng, sa), rand_i8(rng, sb)
    for scales in [(0.5, 0.5, 1.0), (1.0, 0.25, 1.0), (0.03, 0.05, 0.06),
                   tuple(rng.uniform(0.005, 0.2, 3)), (2.0 ** -3, 2.0 ** -31, 1.0)]:
        sa_, sb_, sy_ = scales
        p = add_params(sa_, za, sb_, zb, sy_, zy, off, a_first)
        for qmin, qmax in CLAMPS:
            got = add(a, b, a_zero_point=za, b_zero_point=zb, y_zero_point=zy, **p, qmin=qmin,
                      qmax=qmax)
            want = fma_add(a, b, sa_, za, sb_, zb, sy_, zy, off, a_first, qmin, qmax)
            np.testing.assert_array_equal(got, want)


def test_add_out_of_int32_is_the_x86_indefinite_value():
    # |u| >= 2^31 converts to INT32_MIN on x86 (cvtps2dq): it saturates to -128, not 127
    p = add_params(1.0, 0, 1.0, 0, 2.0 ** -25, 0)
    a = np.array([127, -128], dtype=np.int8)
    np.testing.assert_array_equal(add(a, a, a_zero_point=0, b_zero_point=0, y_zero_point=0, **p),
                                  [-128, -128])


@pytest.mark.parametrize("sa,sb", BROADCAST)
@pytest.mark.parametrize("za,zb,zy", [(-128, 127, 1), (127, -128, -128), (0, 0, 127), (-37, 5, -3)])
def test_mul(sa, sb, za, zb, zy):
    rng = rng_for(sa, sb, za, zb, zy, 1)
    a, b = rand_i8(rng, sa), rand_i8(rng, sb)
    prod = (a.astype(np.int64) - za) * (b.astype(np.int64) - zb)
    for M in [F32(2.0 ** -8), F32(2.0 ** -9), F32(rng.uniform(1e-4, 1e-2)), F32(1.0)]:
        m, k = mk(M)
        for qmin, qmax in CLAMPS:
            got = mul(a, b, a_zero_point=za, b_zero_point=zb, y_zero_point=zy, multiplier=m, shift=k,
                      qmin=qmin, qmax=qmax)
            np.testing.assert_array_equal(got, float_rq_zp_inside(prod, M, zy, qmin, qmax))


def _scale_sets(rng):
    """(s_a, s_b, s_y, exact): exact marks scales for which ONNX Runtime's float math
    is exact (powers of two), so its result must equal ours bit for bit."""
    out = []
    for _ in range(6):
        out.append((F32(rng.uniform(1e-3, 0.2)), F32(rng.uniform(1e-3, 0.2)), F32(rng.uniform(1e-3, 0.2)), False))
        s = F32(rng.uniform(1e-3, 0.2))
        out.append((s, s, F32(2 * s), False))  # M = 1/2: ties everywhere
        out.append(tuple(F32(2.0 ** -int(e)) for e in rng.integers(2, 9, 3)) + (True,))
    return out


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_add_mul_agree_with_onnxruntime(op):
    rng = np.random.default_rng(2024 if op == "QLinearAdd" else 2025)
    ours_all, theirs_all, spec_all = [], [], []
    for i, (sa, sb, sy, exact) in enumerate(_scale_sets(rng)):
        za, zb, zy = (int(v) for v in rng.integers(-128, 128, 3))
        a = rand_i8(rng, (4, 64, 65))
        b = rand_i8(rng, (4, 64, 65) if i % 2 else (64, 1))
        inits = {"as": sa, "az": np.int8(za), "bs": sb, "bz": np.int8(zb), "ys": sy, "yz": np.int8(zy)}
        theirs = ort_node(op, ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], {"a": a, "b": b}, inits,
                          domain="com.microsoft")
        zps = dict(a_zero_point=za, b_zero_point=zb, y_zero_point=zy)
        if op == "QLinearAdd":
            if i % 4 == 3:  # a scalar per span: onnxruntime swaps the operands
                a, b = a[:, :, :1], rand_i8(rng, (4, 64, 65))
                theirs = ort_node(op, ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                                  {"a": a, "b": b}, inits, domain="com.microsoft")
            p = add_params(sa, za, sb, zb, sy, zy, 0, int(a.shape[-1] == 1 < b.shape[-1]))
            ours = add(a, b, **p, **zps)
            np.testing.assert_array_equal(ours, theirs)  # every scale, ties or not
            spec = ours  # (no other rounding to record)
        else:
            m, k = mk(F32(F32(sa * sb) / sy))
            ours = mul(a, b, multiplier=m, shift=k, **zps)
            spec = requant((a.astype(np.int64) - za) * (b.astype(np.int64) - zb), m, k, zy)
        if exact:
            np.testing.assert_array_equal(ours, theirs)
        ours_all.append(ours.ravel())
        theirs_all.append(theirs.ravel())
        spec_all.append(spec.ravel())
    frac, dmax = agreement(op, np.concatenate(ours_all), np.concatenate(theirs_all))
    assert frac == 1.0
    # the rounding this replaces (round half to even, then add z_y), for the record
    if op == "QLinearMul":
        agreement(op + " with round-then-add-z_y", np.concatenate(spec_all),
                  np.concatenate(theirs_all))
