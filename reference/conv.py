"""Quantized convolution, 1-D to 3-D (ONNX QLinearConv with the Synapse requantization).

The integer rule, per output element y[n, m, o...] with g = m // (M / group):

    acc = bias[m] + sum over c in group g's input channels (ascending), then over
          kernel positions k... (ascending), of
          (xp[n, c, o * strides + k * dilations] - x_zero_point)
          * (w[m, c - g * C / group, k...] - w_zero_point[m])
    y   = requant(acc, multiplier[m], shift[m], y_zero_point, qmin, qmax)

where xp is x padded with x_zero_point (so a padding position contributes 0);
`requant` is the rule of reference/requant.py.

Overflow bound (the accumulator is int32 on every backend): per output channel m,
    bound_m = sum over w[m] of |w - w_zero_point[m]|
              * max(|-128 - x_zero_point|, |127 - x_zero_point|) + |bias[m]|  <  2^31.
The core checks it when a model is loaded; this reference accumulates in int64 and
does not check it.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .requant import INT8_MAX, INT8_MIN, requant


def resolve_pads(pads, in_spatial, kernel, strides, dilations):
    """Explicit pads [begins..., ends...]; "same_upper"/"same_lower" resolved as ONNX auto_pad.

    "same_*" gives out = ceil(in / stride); the total padding is split in two halves and
    the odd unit goes at the end (same_upper) or at the beginning (same_lower).
    """
    nd = len(kernel)
    if not isinstance(pads, str):
        pads = [int(p) for p in pads]
        if len(pads) != 2 * nd:
            raise ValueError(f"pads {pads}: expected {2 * nd} values for a {nd}-D kernel")
        return pads
    if pads not in ("same_upper", "same_lower"):
        raise ValueError(f"pads {pads!r}: expected a list, 'same_upper' or 'same_lower'")
    begins, ends = [], []
    for n, k, s, d in zip(in_spatial, kernel, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begins.append(small if pads == "same_upper" else big)
        ends.append(big if pads == "same_upper" else small)
    return begins + ends


def conv_output_shape(in_spatial, kernel, strides, pads, dilations):
    """Output spatial shape: floor((in + pad_begin + pad_end - span) / stride) + 1 per axis,
    span = (kernel - 1) * dilation + 1. ``pads`` may be "same_upper"/"same_lower"."""
    nd = len(kernel)
    pads = resolve_pads(pads, in_spatial, kernel, strides, dilations)
    out = tuple((in_spatial[i] + pads[i] + pads[nd + i] - (kernel[i] - 1) * dilations[i] - 1)
                // strides[i] + 1 for i in range(nd))
    if min(out, default=1) < 1:
        raise ValueError(f"kernel {list(kernel)} (dilations {list(dilations)}) does not fit "
                         f"the input {list(in_spatial)} padded by {pads}")
    return out


def conv(x, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point,
         strides, pads, dilations, group, qmin=INT8_MIN, qmax=INT8_MAX):
    """N-d quantized convolution: x int8 (N, C, *spatial) -> int8 (N, M, *out).

    w int8 (M, C/group, *kernel); bias int32, multiplier/shift int64, w_zero_point int
    (all of length M); pads [begins..., ends...] or "same_upper"/"same_lower".
    """
    x, w = np.asarray(x), np.asarray(w)
    nd = x.ndim - 2
    N, C = x.shape[:2]
    M, Cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    if w.ndim != x.ndim or nd < 1 or C != Cg * group or M % group:
        raise ValueError(f"input {x.shape}, weight {w.shape} and group {group} do not fit")
    pads = resolve_pads(pads, x.shape[2:], kernel, strides, dilations)
    out = conv_output_shape(x.shape[2:], kernel, strides, pads, dilations)
    G, Mg = group, M // group

    # Centre on the zero points; padding the centred input with 0 = padding x with z_x.
    xc = x.astype(np.int64) - int(x_zero_point)
    xc = np.pad(xc, [(0, 0), (0, 0)] + list(zip(pads[:nd], pads[nd:])))
    wc = w.astype(np.int64) - np.asarray(w_zero_point, np.int64).reshape((M,) + (1,) * (nd + 1))

    # patches[n, c, o..., k...] = xc[n, c, o * strides + k * dilations]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = sliding_window_view(xc, spans, axis=tuple(range(2, nd + 2)))
    patches = windows[(slice(None), slice(None))
                      + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides))
                      + tuple(slice(None, None, d) for d in dilations)]

    # Group g reads input channels [g*Cg, (g+1)*Cg) and writes outputs [g*Mg, (g+1)*Mg).
    P, K = int(np.prod(out)), int(np.prod(kernel))
    patches = patches.reshape(N, G, Cg, P, K)
    acc = np.einsum("ngcpk,gmck->ngmp", patches, wc.reshape(G, Mg, Cg, K))
    acc = acc.reshape((N, M) + out) + np.asarray(bias, np.int64).reshape((M,) + (1,) * nd)

    per_channel = (M,) + (1,) * nd
    return requant(acc, np.reshape(multiplier, per_channel), np.reshape(shift, per_channel),
                   int(y_zero_point), qmin, qmax)


def _check_rank(x, nd):
    if np.ndim(x) != nd + 2:
        raise ValueError(f"conv{nd}d expects a rank-{nd + 2} input, got shape {np.shape(x)}")
    return x


def conv1d(x, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point, strides,
           pads, dilations, group, qmin=INT8_MIN, qmax=INT8_MAX):
    """1-D quantized convolution, x (N, C, W); see `conv`."""
    return conv(_check_rank(x, 1), w=w, bias=bias, multiplier=multiplier, shift=shift,
                w_zero_point=w_zero_point, x_zero_point=x_zero_point, y_zero_point=y_zero_point,
                strides=strides, pads=pads, dilations=dilations, group=group, qmin=qmin, qmax=qmax)


def conv2d(x, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point, strides,
           pads, dilations, group, qmin=INT8_MIN, qmax=INT8_MAX):
    """2-D quantized convolution, x (N, C, H, W); see `conv`."""
    return conv(_check_rank(x, 2), w=w, bias=bias, multiplier=multiplier, shift=shift,
                w_zero_point=w_zero_point, x_zero_point=x_zero_point, y_zero_point=y_zero_point,
                strides=strides, pads=pads, dilations=dilations, group=group, qmin=qmin, qmax=qmax)


def conv3d(x, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point, strides,
           pads, dilations, group, qmin=INT8_MIN, qmax=INT8_MAX):
    """3-D quantized convolution, x (N, C, D, H, W); see `conv`."""
    return conv(_check_rank(x, 3), w=w, bias=bias, multiplier=multiplier, shift=shift,
                w_zero_point=w_zero_point, x_zero_point=x_zero_point, y_zero_point=y_zero_point,
                strides=strides, pads=pads, dilations=dilations, group=group, qmin=qmin, qmax=qmax)
