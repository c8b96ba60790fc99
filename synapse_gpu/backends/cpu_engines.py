"""Which exact GEMM engine runs conv and dense on this CPU: candidates, self-test, choice.

Candidates, in order of preference (see `ENGINES`):
- onnxruntime-u8s8: MLAS uint8 x int8, its fastest x86 path. With AVX-512 VNNI /
  AVX-VNNI it accumulates straight into int32 and is exact; on plain AVX2 it sums
  pairs of products into int16 with saturation (vpmaddubsw) and is NOT exact
  (2 * 255 * 128 > 32767; onnxruntime issue #14642): there the self-test rejects it at
  its first cases, in a few milliseconds.
- onnxruntime-u8s8-w64 (per layer, next to the engine chosen): u8s8 for the layers whose
  int8 weights and weight zero point lie in [-64, 64]. There the pair sums cannot
  saturate even with vpmaddubsw: |x1 w1 + x2 w2| <= 2 * 255 * 64 = 32640 < 32767 (MLAS
  multiplies the raw uint8 codes by the raw int8 weights and applies the zero points
  afterwards, in int32 sums). Its self-test runs every case with the weights held
  inside the limit, at both ends; reduce_range quantizers write such weights.
- onnxruntime-u8u8: MLAS uint8 x uint8 (weights shifted by 128). Its x86 kernels widen
  to 16 bits and multiply-add pairs into int32 (vpmaddwd): no saturation anywhere.
  Measured on a 2-core AVX2 EPYC: 4-5x the float32 path on ResNet-50's convs.
- float32-blas: cpu_conv.py's chunked float32 BLAS, exact by proof (cpu_gemm.py):
  always admitted, the fallback.

Every onnxruntime engine is admitted per machine by `self_test`, once per process and
reduction length (cached): adversarial layers built through the engine's own code
path, compared with an independent int64 computation (raw accumulators) and with the
numpy reference (fused requantization). An engine that fails any case is never used.
SYNAPSE_CPU_ENGINE=<name> puts one candidate first (it must still pass the self-test);
any name but onnxruntime-u8s8-w64 also turns the per-layer u8s8-w64 off.
"""
from __future__ import annotations

import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import cpu_ort

ENV = "SYNAPSE_CPU_ENGINE"
FLOAT = "float32-blas"
# the longest reduction for which the all-extreme operands cannot overflow int32
FULL_SCALE_K = ((1 << 31) - 1) // (255 * 255)


class OrtEngine:
    """Conv and dense as onnxruntime graphs (cpu_ort.py) with the given weight type."""

    def __init__(self, name, weight_dtype, w_limit=None):
        self.name, self.weight_dtype, self.w_limit = name, weight_dtype, w_limit

    def fits(self, w, w_zero_point):
        """Whether the layer's weights are inside the engine's limit (if it has one)."""
        lim = self.w_limit
        return lim is None or bool(np.abs(np.asarray(w, np.int64)).max(initial=0) <= lim
                                   and np.abs(np.asarray(w_zero_point, np.int64)).max(initial=0) <= lim)

    def conv(self, M32, **params):
        return cpu_ort.conv_layer(self.weight_dtype, M32, **params)

    def dense(self, M32, fused=True, **params):
        return cpu_ort.dense_layer(self.weight_dtype, M32, fused, **params)


ENGINES = [OrtEngine("onnxruntime-u8s8", np.int8), OrtEngine("onnxruntime-u8u8", np.uint8)]
NARROW = OrtEngine("onnxruntime-u8s8-w64", np.int8, w_limit=64)
_results = {}  # (engine name, reduction bucket) -> (admitted, detail)


def bucket(k_max):
    """Self-test length for a model's longest reduction: a power of two >= 4096."""
    return max(4096, 1 << (max(1, int(k_max)) - 1).bit_length())


# ---- exact int64 accumulators (independent of every engine) ---------------------------

def _acc_dense(x, W, xz, wz, bias):
    return (x.astype(np.int64) - xz) @ (W.astype(np.int64) - np.asarray(wz, np.int64)) + bias


def _acc_conv(x, w, xz, wz, bias, strides, pads, dilations, group):
    nd = x.ndim - 2
    xc = np.pad(x.astype(np.int64) - xz, [(0, 0), (0, 0)] + list(zip(pads[:nd], pads[nd:])))
    wc = w.astype(np.int64) - wz
    M, Cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(xc, spans, axis=tuple(range(2, nd + 2)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dilations)]
    out = win.shape[2:2 + nd]
    G, N = group, x.shape[0]
    win = win.reshape(N, G, Cg, int(np.prod(out)), int(np.prod(kernel)))
    acc = np.einsum("ngcpk,gmck->ngmp", win, wc.reshape(G, M // G, Cg, -1))
    return acc.reshape((N, M) + out) + bias.reshape((M,) + (1,) * nd)


# ---- adversarial operands ------------------------------------------------------------

def _patterns(n, rows, rng):
    """`rows` int8 vectors of length n: every code-extreme pairing a pair-summing kernel
    can see (both extremes, alternating in both phases, blocks of 2), random extremes
    and random codes."""
    i = np.arange(n)
    hi, lo = np.full(n, 127), np.full(n, -128)
    alt = np.where(i % 2 == 0, 127, -128)
    base = [hi, lo, alt, -1 - alt, np.where(i % 4 < 2, 127, -128)]
    out = base + [rng.choice([-128, 127], n) for _ in range(2)]
    while len(out) < rows:
        out.append(rng.integers(-128, 128, n))
    return np.array(out[:rows], np.int8)


def _limit(v, zp, k_full):
    """Beyond the first k_full terms, hold the operand at its zero point: the exact sum
    stays inside int32 (every valid model's accumulators do, by the load-time proof)."""
    v = v.copy()
    v[..., k_full:] = zp
    return v


def _held(w, lim):
    """Weights (or zero points) held inside [-lim, lim]: the extremes land on the limit."""
    return w if lim is None else np.clip(w, -lim, lim).astype(np.asarray(w).dtype)


def _dense_cases(k_max, rng, lim=None):
    lengths = sorted({1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257,
                      1023, 1024, 1025, k_max - 1, k_max})
    for k in lengths:
        for xz, wz in ((-128, 127), (127, -128), (-128, -128), (127, 127), (0, 0)):
            k_full, wz = min(k, FULL_SCALE_K), int(_held(wz, lim))
            x = _limit(_patterns(k, 9, rng), xz, k_full)
            W = _limit(_held(_patterns(k, 8, rng), lim), wz, k_full).T  # (K, M)
            yield x, W, xz, wz


def _conv_cases(rng, lim=None):
    """(x, params) conv layers: code-extreme weights, inputs constant over each channel's
    plane (so every window away from the border sees the same values), multiplier 1 and
    bias = -(the exact centre accumulator): the reference output is z_y = 0 there, and any
    accumulator error e != 0 shows as clamp(e) != 0. Then the same weights on random
    inputs with a spreading multiplier (borders, padding, strides)."""
    from ..reference.requant import quantize_multiplier

    # (C, M, spatial, kernel, strides, pads, dilations, group, z_x, z_w)
    specs = [(8, 5, (6, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, -128, 127),
             (8, 6, (6, 7), (3, 3), (2, 1), (0, 2, 1, 0), (1, 1), 2, 127, -128),
             (64, 16, (5, 5), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 127, 127),
             (32, 32, (9, 8), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 32, -128, -128),
             (48, 48, (7, 7), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 48, -128, 127),
             (3, 16, (11, 11), (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, 5, -7),
             (32, 3, (9,), (5,), (2,), (2, 1), (1,), 1, -128, 127),
             (512, 8, (5, 5), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, -128, 127),
             # z_w = 0: onnxruntime's symmetric u8s8 conv kernels (a path of their own)
             (64, 24, (6, 5), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, -128, 0),
             (96, 40, (5, 5), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 127, 0),
             (32, 32, (7, 6), (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 32, 127, 0)]
    one_m, one_k = quantize_multiplier(np.float32(1))
    for C, M, sp, ker, st, pads, dil, g, xz, wz in specs:
        K, wz = C // g * int(np.prod(ker)), int(_held(wz, lim))
        w = _limit(_held(_patterns(K, M, rng), lim), wz, FULL_SCALE_K).reshape((M, C // g) + ker)
        base = dict(w=w, w_zero_point=np.full(M, wz), x_zero_point=xz, strides=list(st), pads=list(pads),
                    dilations=list(dil), group=g, y_zero_point=0)
        planes = _patterns(C, 1, rng)[0] if C > 1 else np.array([127], np.int8)
        for v in (planes, -1 - planes.astype(np.int16)):
            x = np.broadcast_to(np.asarray(v, np.int8).reshape((1, C) + (1,) * len(sp)), (1, C) + sp).copy()
            zero = np.zeros(M, np.int64)
            A = _acc_conv(x, w, xz, wz, zero, st, pads, dil, g)
            centre = A[(0, slice(None)) + tuple(n // 2 for n in A.shape[2:])]
            yield x, dict(base, bias=(-centre).astype(np.int32), multiplier=np.full(M, one_m),
                          shift=np.full(M, one_k))
        x = rng.integers(-128, 128, (2, C) + sp).astype(np.int8)
        A = _acc_conv(x, w, xz, wz, np.zeros(M, np.int64), st, pads, dil, g)
        spread = np.abs(A).reshape(2, M, -1).max(axis=(0, 2)) + 1
        m, k = quantize_multiplier((100.0 / spread).astype(np.float32))
        yield x, dict(base, bias=rng.integers(-1000, 1000, M).astype(np.int32), multiplier=m, shift=k)


def _requant_cases():
    """Layers with one input channel and w = 1 (so acc = x - z_x + bias), as a dense, a 1x1
    conv and a depthwise conv (centre tap 1): biases place the accumulators at rounding ties, at the 2^24 float32
    step, at the clamps and near +-2^31; multipliers from cpu_ort.M_RANGE's ends through
    the usual values; both y zero-point ends and narrowed clamps."""
    from ..reference.requant import quantize_multiplier

    Ms = np.array([0.5, 0.25, 2.0 ** -10, 1.0, 3.0, 2.0 ** -30, 0.7071067, 1.1920929e-07,
                   0.0123456] + list(cpu_ort.M_RANGE), np.float32)
    biases = np.array([0, 1 << 24, -(1 << 24) - 129, 255, -383, (1 << 31) - 300,
                       -(1 << 31) + 300, 12345], np.int64)
    M = np.repeat(Ms, len(biases))
    bias = np.tile(biases, len(Ms)).astype(np.int32)  # |x - z_x| <= 255 keeps |acc| < 2^31
    m, k = quantize_multiplier(M)
    x = np.arange(-128, 128, dtype=np.int8)
    for xz, yz, qmin, qmax in ((0, -128, -128, 127), (-128, 127, -128, 127), (127, 0, 0, 127),
                               (3, -5, -20, 60)):
        p = dict(bias=bias, multiplier=m, shift=k, w_zero_point=np.zeros(len(M), np.int64),
                 x_zero_point=xz, y_zero_point=yz, qmin=qmin, qmax=qmax)
        yield "dense", x.reshape(-1, 1), dict(p, w=np.ones((1, len(M)), np.int8), trans_w=False)
        yield "conv", x.reshape(1, 1, 16, 16), dict(p, w=np.ones((len(M), 1, 1, 1), np.int8),
                                                    strides=[1, 1], pads=[0, 0, 0, 0],
                                                    dilations=[1, 1], group=1)
        # depthwise 3x3 with only the centre tap 1 (onnxruntime's depthwise kernel)
        centre = np.zeros((len(M), 1, 3, 3), np.int8)
        centre[:, :, 1, 1] = 1
        planes = np.broadcast_to(x.reshape(1, 1, 16, 16), (1, len(M), 16, 16)).copy()
        yield "conv", planes, dict(p, w=centre, strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1],
                                   group=len(M))


def self_test(engine, k_max):
    """(admitted, detail): the engine's layers against exact int64 / the reference."""
    from ..reference.conv import conv as ref_conv
    from ..reference.dense import dense as ref_dense
    from .cpu_conv import multiplier_f32

    rng = np.random.default_rng(20261201)
    raw = dict(multiplier=None, shift=None, y_zero_point=0)
    try:
        for x, W, xz, wz in _dense_cases(k_max, rng, engine.w_limit):
            M = W.shape[1]
            bias = rng.integers(-1000, 1000, M).astype(np.int32)
            layer = engine.dense(None, fused=False, w=W, bias=bias, w_zero_point=np.full(M, wz),
                                 x_zero_point=xz, trans_w=False, **raw)
            want = _acc_dense(x, W, xz, wz, bias)
            if layer is None or not np.array_equal(layer(x), want):
                return False, f"dense accumulators differ (K={x.shape[1]}, z_x={xz}, z_w={wz})"
        for x, p in _conv_cases(rng, engine.w_limit):
            layer = engine.conv(multiplier_f32(p["multiplier"], p["shift"]), **p)
            if layer is None or not np.array_equal(layer(x), ref_conv(x, **p)):
                return False, f"conv differs (weights {p['w'].shape}, group {p['group']})"
        for kind, x, p in _requant_cases():
            M32 = multiplier_f32(p["multiplier"], p["shift"])
            layer = engine.dense(M32, **p) if kind == "dense" else engine.conv(M32, **p)
            ref = ref_dense if kind == "dense" else ref_conv
            if layer is None or not np.array_equal(layer(x), ref(x, **p)):
                return False, (f"{kind} requantization differs (z_x={p['x_zero_point']}, "
                               f"z_y={p['y_zero_point']})")
    except Exception as e:  # an engine that cannot even run its graphs is not admitted
        return False, f"failed to run: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return True, f"exact on all self-test cases (reductions up to {k_max})"


def candidates():
    """ENGINES in order of preference, $SYNAPSE_CPU_ENGINE first when set."""
    forced = os.environ.get(ENV, "")
    names = [e.name for e in ENGINES] + [NARROW.name, FLOAT]
    if forced and forced not in names:
        raise ValueError(f"{ENV}={forced!r}: expected one of {names}")
    if forced == FLOAT:
        return []
    return sorted(ENGINES, key=lambda e: e.name != forced)


def admitted(engine, k_max):
    """Cached `self_test` per (engine, reduction bucket)."""
    key = (engine.name, bucket(k_max))
    if key not in _results:
        _results[key] = self_test(engine, key[1])
    return _results[key]


def choose(k_max):
    """(engine or None for the float path, report lines): the first admitted candidate."""
    lines = []
    for engine in candidates():
        ok, detail = admitted(engine, k_max)
        lines.append(f"{engine.name}: {'admitted' if ok else 'rejected'} ({detail})")
        if ok:
            return engine, lines
    lines.append(f"{FLOAT}: admitted (exact by proof)")
    return None, lines


def narrow(k_max):
    """(NARROW or None, report lines): the per-layer u8s8-w64 engine where admitted and not
    turned off by $SYNAPSE_CPU_ENGINE naming another engine."""
    forced = os.environ.get(ENV, "")
    if forced and forced != NARROW.name:
        return None, []
    ok, detail = admitted(NARROW, k_max)
    return (NARROW if ok else None), [f"{NARROW.name}: {'admitted' if ok else 'rejected'} ({detail}), "
                                      f"for layers with weights in [-{NARROW.w_limit}, {NARROW.w_limit}]"]


def for_layer(engine, narrow_engine, w, w_zero_point):
    """The engine a conv/dense layer runs on: the narrow one where its weights fit."""
    return narrow_engine if narrow_engine is not None and narrow_engine.fits(w, w_zero_point) else engine
