"""Exact conv (1-D to 3-D) and dense on float32 BLAS: same bits as reference/.

The CPU backend's fallback engine ("float32-blas", exact by proof on every machine):
it runs where no integer engine passes its self-test (cpu_engines.py), and for the
layers an integer engine cannot express (3-D convs, differing weight zero points).

conv: the centred input (x - z_x, float32, padded with 0) is unfolded into columns
(im2col) per block of images, multiplied by the prepared weights with the exact
float32 GEMM of cpu_gemm.py, and requantized in float32 (`requant_f32`). Weights are
converted, centred and chunked once, in `prepare_conv` / `prepare_dense`; the
backend keeps the prepared object for the session.

Memory: the columns take 4 * C * prod(kernel) * prod(out) bytes per image; images
(and, for one huge image, rows of the first output axis) are processed in blocks of
at most BLOCK_BYTES of columns.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..reference.conv import conv_output_shape, resolve_pads
from ..reference.requant import INT8_MAX, INT8_MIN, requant
from .cpu_gemm import ExactGemm

BLOCK_BYTES = 32 << 20


def multiplier_f32(multiplier, shift):
    """float32 M = m * 2^-k for each (m, k), or None when one is not exactly a float32
    (then `requant_f32` would differ from the rule and the caller uses `requant`)."""
    m = np.asarray(multiplier, np.int64)
    exact = np.ldexp(m.astype(np.float64), -np.asarray(shift, np.int64))
    with np.errstate(over="ignore"):
        M = exact.astype(np.float32)
    if np.any(m >= 1 << 24) or np.any(M.astype(np.float64) != exact):
        return None
    return M


def requant_f32(t, M, zero_point, qmin, qmax, out):
    """out = clamp(rint(t * M) + z, qmin, qmax) for t = f32(acc): equals `requant`.

    Why it is the integer rule (M = m * 2^-k exactly, `multiplier_f32`):
    - t is step 1's a = acc rounded to 24 bits, ties to even (the caller rounds once);
    - t * M is one IEEE float32 multiplication: the exact a * m * 2^-k rounded to 24
      significant bits, ties to even = step 2's p scaled by 2^-k exactly (scaling by a
      power of two commutes with rounding to significant bits), while the product is
      in float32's normal range. Below 2^-126 it is rounded to a subnormal or 0, and the
      rule's p * 2^-k is below 2^-126 too: both give 0 after rounding to an integer.
      Above the float32 range it is +-inf, and both saturate at the clamp;
    - np.rint is round half to even (step 3); adding |z| <= 128 to an integer below
      2^24 is exact, and one above saturates either way; the clamp is exact.
    Flush-to-zero / denormals-are-zero modes change nothing: t is an integer, and a
    subnormal M or product gives 0 both ways.
    tests/test_cpu_fast.py checks it against `requant` on millions of cases.
    t is overwritten.
    """
    with np.errstate(over="ignore"):  # an infinite product saturates at the clamp
        np.multiply(t, M, out=t)
    np.rint(t, out=t)
    t += np.float32(zero_point)
    np.clip(t, qmin, qmax, out=t)
    out[...] = t


def _requant_into(t, M, multiplier, shift, zero_point, qmin, qmax, out):
    if M is not None:
        requant_f32(t, M, zero_point, qmin, qmax, out)
    else:  # t = f32(acc) is already rounded to 24 bits: `requant` on it is the rule
        out[...] = requant(t.astype(np.int64), multiplier, shift, zero_point, qmin, qmax)


def _x_max(x_zero_point):
    return max(abs(INT8_MIN - int(x_zero_point)), abs(INT8_MAX - int(x_zero_point)))


class PreparedConv:
    """A conv node with its weights prepared once; call it on int8 x (N, C, *spatial)."""

    def __init__(self, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point,
                 strides, pads, dilations, group, qmin=INT8_MIN, qmax=INT8_MAX):
        w = np.asarray(w)
        self.nd = nd = w.ndim - 2
        M, self.Cg, self.kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
        self.M, self.group = M, int(group)
        self.K = self.Cg * int(np.prod(self.kernel))  # reduction length per group
        self.strides, self.dilations = tuple(strides), tuple(dilations)
        self.pads = pads
        self.x_zero_point, self.y_zero_point = int(x_zero_point), int(y_zero_point)
        self.qmin, self.qmax = qmin, qmax
        # W (G, M/G, C/G * prod(kernel)): rows in the column order of the unfolded input
        wc = (w.reshape(M, self.K).astype(np.int32)
              - np.asarray(w_zero_point, np.int32).reshape(M, 1))
        self.gemm = ExactGemm(wc.reshape(self.group, M // self.group, self.K),
                              _x_max(x_zero_point), bias)
        per_channel = (M,) + (1,) * nd  # broadcasts against (n, M, *out)
        self.multiplier = np.asarray(multiplier, np.int64).reshape(per_channel)
        self.shift = np.asarray(shift, np.int64).reshape(per_channel)
        self.M32 = multiplier_f32(self.multiplier, self.shift)

    def __call__(self, x):
        x = np.asarray(x)
        nd, G = self.nd, self.group
        if x.ndim != nd + 2 or x.shape[1] != self.Cg * G:
            raise ValueError(f"conv input {x.shape} does not fit the weights "
                             f"({self.M}, {self.Cg}, *{self.kernel}), group {G}")
        N, C, spatial = x.shape[0], x.shape[1], x.shape[2:]
        pads = resolve_pads(self.pads, spatial, self.kernel, self.strides, self.dilations)
        out = conv_output_shape(spatial, self.kernel, self.strides, pads, self.dilations)
        y = np.empty((N, self.M) + out, dtype=np.int8)
        row_bytes = 4 * G * self.K * int(np.prod(out[1:]))  # columns of one output row
        rows = max(1, min(out[0], BLOCK_BYTES // row_bytes))  # rows of one image per block
        images = max(1, BLOCK_BYTES // (row_bytes * out[0])) if rows == out[0] else 1
        pointwise = all(k == 1 for k in self.kernel) and not any(pads)
        spans = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]
        for n0 in range(0, N, images):
            n1 = min(N, n0 + images)
            if pointwise:  # 1x1 kernel: the columns are the (strided) input itself
                xb = x[(slice(n0, n1), slice(None)) + tuple(slice(None, None, s)
                                                            for s in self.strides)]
                xc = np.subtract(xb, np.float32(self.x_zero_point), dtype=np.float32)
                windows = xc.reshape(xc.shape + (1,) * nd)
            else:  # the centred input padded with 0 = x padded with z_x
                xc = np.zeros((n1 - n0, C) + tuple(
                    n + pads[i] + pads[nd + i] for i, n in enumerate(spatial)), np.float32)
                inner = tuple(slice(pads[i], pads[i] + n) for i, n in enumerate(spatial))
                np.subtract(x[n0:n1], np.float32(self.x_zero_point),
                            out=xc[(Ellipsis,) + inner])
                windows = sliding_window_view(xc, spans, axis=tuple(range(2, nd + 2)))
                windows = windows[(slice(None), slice(None))
                                  + tuple(slice(0, (o - 1) * s + 1, s)
                                          for o, s in zip(out, self.strides))
                                  + tuple(slice(None, None, d) for d in self.dilations)]
            # windows (n, C, *out, *kernel) -> columns (n, G, C/G * prod(kernel), positions)
            windows = windows.transpose((0, 1) + tuple(range(2 + nd, 2 + 2 * nd))
                                        + tuple(range(2, 2 + nd)))
            for r0 in range(0, out[0], rows):
                r1 = min(out[0], r0 + rows)
                block = windows[(Ellipsis, slice(r0, r1)) + (slice(None),) * (nd - 1)]
                cols = np.ascontiguousarray(block).reshape(n1 - n0, G, self.K, -1)
                t = self.gemm.rounded(cols).reshape((n1 - n0, self.M, r1 - r0) + out[1:])
                _requant_into(t, self.M32, self.multiplier, self.shift, self.y_zero_point,
                              self.qmin, self.qmax, y[n0:n1, :, r0:r1])
        return y


def prepare_conv(**params):
    """A `PreparedConv` from the node's params and attrs (keywords of reference `conv`)."""
    return PreparedConv(**params)


def conv(x, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point, strides,
         pads, dilations, group, qmin=INT8_MIN, qmax=INT8_MAX):
    """One-off fast conv, same signature and bits as reference/conv.py:conv."""
    return PreparedConv(w=w, bias=bias, multiplier=multiplier, shift=shift,
                        w_zero_point=w_zero_point, x_zero_point=x_zero_point,
                        y_zero_point=y_zero_point, strides=strides, pads=pads,
                        dilations=dilations, group=group, qmin=qmin, qmax=qmax)(x)


class PreparedDense:
    """A dense node with its weights prepared once; call it on int8 x (..., K)."""

    def __init__(self, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point,
                 trans_w, qmin=INT8_MIN, qmax=INT8_MAX):
        w = np.asarray(w)
        W = w if trans_w else w.T  # (M, K): the left operand of W @ x^T
        self.M, self.K = W.shape
        wc = W.astype(np.int32) - np.asarray(w_zero_point, np.int32).reshape(self.M, 1)
        self.gemm = ExactGemm(wc[None], _x_max(x_zero_point), bias)
        self.x_zero_point, self.y_zero_point = int(x_zero_point), int(y_zero_point)
        self.qmin, self.qmax = qmin, qmax
        self.multiplier = np.asarray(multiplier, np.int64)
        self.shift = np.asarray(shift, np.int64)
        self.M32 = multiplier_f32(self.multiplier, self.shift)

    def __call__(self, x):
        x = np.asarray(x)
        if x.shape[-1] != self.K:
            raise ValueError(f"dense input {x.shape} does not match K = {self.K}")
        rows = x.reshape(-1, self.K)
        xt = np.subtract(rows, np.float32(self.x_zero_point), dtype=np.float32).T
        t = self.gemm.rounded(xt[None])[0].T  # (rows, M)
        y = np.empty(rows.shape[:1] + (self.M,), np.int8)
        _requant_into(t, self.M32, self.multiplier, self.shift, self.y_zero_point,
                      self.qmin, self.qmax, y)
        return y.reshape(x.shape[:-1] + (self.M,))


def prepare_dense(**params):
    """A `PreparedDense` from the node's params and attrs (keywords of reference `dense`)."""
    return PreparedDense(**params)


def dense(x, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point, trans_w,
          qmin=INT8_MIN, qmax=INT8_MAX):
    """One-off fast dense, same signature and bits as reference/dense.py:dense."""
    return PreparedDense(w=w, bias=bias, multiplier=multiplier, shift=shift,
                         w_zero_point=w_zero_point, x_zero_point=x_zero_point,
                         y_zero_point=y_zero_point, trans_w=trans_w, qmin=qmin, qmax=qmax)(x)
