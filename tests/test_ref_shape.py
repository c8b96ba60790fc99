"""reference/shape.py against ONNX Runtime (same rule: pure data movement) and, for
concat's rescale, the float32 formula of requant; agreement with ONNX Runtime's
QLinearConcat is measured (pytest -s -k onnxruntime)."""
import numpy as np
import pytest

from synapse_gpu.reference.requant import quantize_multiplier
from synapse_gpu.reference.shape import concat, flatten, pad, reshape, transpose
from ort_helpers import agreement, ort_node, rand_i8, rng_for

F32 = np.float32


SHAPES = [(2, 3), (2, 3, 4), (3, 2, 4, 5), (2, 1, 3, 2, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("axis", [1, -1])
def test_flatten(shape, axis):
    x = rand_i8(rng_for(shape, axis), shape)
    np.testing.assert_array_equal(flatten(x, axis=axis), ort_node("Flatten", ["x"], {"x": x}, {}, {"axis": axis}))


@pytest.mark.parametrize("shape,target", [((2, 3, 4), [-1, 12]), ((2, 3, 4), [0, 4, 3]), ((3, 2, 4, 5), [0, 0, -1]),
                                          ((2, 6), [0, 2, 1, 3]), ((2, 1, 3, 2, 2), [-1, 3, 4])])
def test_reshape(shape, target):
    x = rand_i8(rng_for(shape), shape)
    want = ort_node("Reshape", ["x", "s"], {"x": x}, {"s": np.array(target, dtype=np.int64)})
    np.testing.assert_array_equal(reshape(x, shape=target), want)


@pytest.mark.parametrize("shape,perm", [((2, 3, 4), [0, 2, 1]), ((3, 2, 4, 5), [0, 3, 1, 2]),
                                        ((2, 1, 3, 2, 2), [0, 4, 2, 3, 1]), ((2, 3), [0, 1])])
def test_transpose(shape, perm):
    x = rand_i8(rng_for(shape), shape)
    np.testing.assert_array_equal(transpose(x, perm=perm), ort_node("Transpose", ["x"], {"x": x}, {}, {"perm": perm}))


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_pad(shape, mode):
    rng = rng_for(shape, len(mode))
    x = rand_i8(rng, shape)
    r = len(shape)
    pads = [0] + [int(v) for v in rng.integers(0, shape[1:])] + [0] + [int(v) for v in rng.integers(0, shape[1:])]
    value = int(rng.integers(-128, 128))
    names, inits = ["x", "p"], {"p": np.array(pads, dtype=np.int64)}
    if mode == "constant":
        names.append("v")
        inits["v"] = np.int8(value)
    got = pad(x, pads=pads, mode=mode, value=value)
    assert got.shape == tuple(shape[i] + pads[i] + pads[r + i] for i in range(r))
    np.testing.assert_array_equal(got, ort_node("Pad", names, {"x": x}, inits, {"mode": mode}))


# ---- concat ------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [1, 2, -1])
@pytest.mark.parametrize("z", [-128, 0, 127])
def test_concat_equal_scales_is_plain_concatenation(axis, z):
    rng = rng_for(axis, z)
    xs = [rand_i8(rng, (2, 3, 4, 5)), rand_i8(rng, (2, 3, 4, 5)), rand_i8(rng, (2, 3, 4, 5))]
    m, k = quantize_multiplier(F32(1.0))
    got = concat(*xs, axis=axis, x_zero_points=[z] * 3, multipliers=[m] * 3, shifts=[k] * 3, y_zero_point=z)
    feeds = {f"x{i}": x for i, x in enumerate(xs)}
    np.testing.assert_array_equal(got, ort_node("Concat", list(feeds), feeds, {}, {"axis": axis}))


@pytest.mark.parametrize("axis", [1, 3])
@pytest.mark.parametrize("zy", [-128, 9, 127])
def test_concat_rescale(axis, zy):
    rng = rng_for(axis, zy)
    shapes = [(2, 3, 4, 5), (2, 3, 4, 5)]
    shapes[1] = tuple(7 if i == axis else d for i, d in enumerate(shapes[1]))
    xs = [rand_i8(rng, s) for s in shapes]
    zs = [-128, 127]
    Ms = [F32(0.5), F32(rng.uniform(0.1, 3))]
    mk = [quantize_multiplier(M) for M in Ms]
    got = concat(*xs, axis=axis, x_zero_points=zs, multipliers=[m for m, _ in mk], shifts=[k for _, k in mk],
                 y_zero_point=zy)
    want = [np.clip(np.rint((x.astype(np.int64) - z).astype(F32) * M) + zy, -128, 127).astype(np.int8)
            for x, z, M in zip(xs, zs, Ms)]
    np.testing.assert_array_equal(got, np.concatenate(want, axis=axis))


def test_concat_agreement_with_onnxruntime():
    rng = np.random.default_rng(77)
    ours_all, theirs_all = [], []
    for i in range(24):
        kind = i % 3  # random scales; s_a == s_b == s_y / 2 (ties); powers of two (exact in float)
        s = [F32(rng.uniform(1e-3, 0.2)) for _ in range(3)]
        if kind == 1:
            s = [s[0], s[0], F32(2 * s[0])]
        if kind == 2:
            s = [F32(2.0 ** -int(e)) for e in rng.integers(2, 9, 3)]
        za, zb, zy = (int(v) for v in rng.integers(-128, 128, 3))
        a, b = rand_i8(rng, (4, 64, 33)), rand_i8(rng, (4, 17, 33))
        mk = [quantize_multiplier(F32(si / s[2])) for si in s[:2]]
        ours = concat(a, b, axis=1, x_zero_points=[za, zb], multipliers=[m for m, _ in mk],
                      shifts=[k for _, k in mk], y_zero_point=zy)
        inits = {"as": s[0], "az": np.int8(za), "bs": s[1], "bz": np.int8(zb), "ys": s[2], "yz": np.int8(zy)}
        theirs = ort_node("QLinearConcat", ["ys", "yz", "a", "as", "az", "b", "bs", "bz"], {"a": a, "b": b},
                          inits, {"axis": 1}, "com.microsoft")
        if kind == 2:
            np.testing.assert_array_equal(ours, theirs)
        ours_all.append(ours.ravel())
        theirs_all.append(theirs.ravel())
    frac, dmax = agreement("QLinearConcat", np.concatenate(ours_all), np.concatenate(theirs_all))
    assert frac > 0.99 and dmax <= 1
