"""Fast max and average pooling for the CPU backend: same bits as reference/pool.py.

The input is padded far enough that every window fits; each kernel tap is then one
strided view (no gather).
max_pool: padding is -128, the identity of max on int8: it never beats a valid tap,
and a window without a valid tap gives -128, the reference's rule.
avg_pool: the centred input x - z_x is padded with 0, so the tap sum is the
reference's sum over valid taps; the tap counts come from the same pooling of 0/1
masks (valid taps, taps in the padded region); the reference's rounding function
`requant_zp_inside` then gives the output.
"""
import numpy as np

from ..reference.pool import output_size
from ..reference.requant import INT8_MAX, INT8_MIN, requant_zp_inside


def _geometry(sp, kernel_shape, strides, pads, dilations, ceil_mode):
    nd = len(kernel_shape)
    strides = strides or [1] * nd
    pads = pads or [0] * (2 * nd)
    dilations = dilations or [1] * nd
    outs = [output_size(sp[i], kernel_shape[i], strides[i], pads[i], pads[nd + i], dilations[i],
                        ceil_mode) for i in range(nd)]
    # padded length: the last window ends at (out - 1) * s + (k - 1) * d + 1
    lengths = [max(pads[i] + sp[i] + pads[nd + i],
                   (outs[i] - 1) * strides[i] + (kernel_shape[i] - 1) * dilations[i] + 1)
               for i in range(nd)]
    return strides, pads, dilations, outs, lengths


def _taps(xp, kernel_shape, strides, dilations, outs):
    """The strided view of padded xp at each kernel tap (last len(outs) axes)."""
    for tap in np.ndindex(*kernel_shape):
        yield xp[(Ellipsis,) + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                     for t, d, o, s in zip(tap, dilations, outs, strides))]


def max_pool(x, *, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0):
    x = np.asarray(x, dtype=np.int8)
    sp, nd = x.shape[2:], len(kernel_shape)
    strides, pads, dilations, outs, lengths = _geometry(sp, kernel_shape, strides, pads, dilations,
                                                        ceil_mode)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], lengths[i] - pads[i] - sp[i]) for i in range(nd)],
                constant_values=INT8_MIN)
    y = None
    for view in _taps(xp, kernel_shape, strides, dilations, outs):
        if y is None:
            y = view.copy()
        else:
            np.maximum(y, view, out=y)
    return y


def avg_pool(x, *, multiplier, shift, kernel_shape, x_zero_point, y_zero_point, strides=None,
             pads=None, dilations=None, ceil_mode=0, count_include_pad=0, qmin=INT8_MIN,
             qmax=INT8_MAX):
    x = np.asarray(x, dtype=np.int8)
    strides, dilations, outs, ends, count = avg_pool_counts(
        x.shape[2:], kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad)
    xc = np.pad(x.astype(np.int32) - np.int32(x_zero_point), [(0, 0), (0, 0)] + ends)
    total = np.zeros(x.shape[:2] + tuple(outs), np.int32)  # |sum| <= 255 * taps
    for view in _taps(xc, kernel_shape, strides, dilations, outs):
        total += view
    return avg_pool_round(total, count, multiplier, shift, y_zero_point, qmin, qmax)


def avg_pool_counts(sp, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad):
    """(strides, dilations, output sizes, (begin, end) padding of each spatial axis so
    every window fits, taps counted at each output position)."""
    nd = len(kernel_shape)
    strides, pads, dilations, outs, lengths = _geometry(sp, kernel_shape, strides, pads, dilations,
                                                        ceil_mode)
    ends = [(pads[i], lengths[i] - pads[i] - sp[i]) for i in range(nd)]
    if count_include_pad:  # taps inside [-pad_begin, n + pad_end)
        mask = np.zeros(lengths, np.int32)
        mask[tuple(slice(0, pads[i] + sp[i] + pads[nd + i]) for i in range(nd))] = 1
    else:  # taps inside the input
        mask = np.pad(np.ones(sp, np.int32), ends)
    return strides, dilations, outs, ends, sum(_taps(mask, kernel_shape, strides, dilations, outs))


def avg_pool_round(total, count, multiplier, shift, y_zero_point, qmin=INT8_MIN, qmax=INT8_MAX):
    """The output of a window with tap sum `total` (of x - z_x) over `count` taps."""
    m = np.asarray(multiplier, dtype=np.int64)[count]
    k = np.asarray(shift, dtype=np.int64)[count]
    return requant_zp_inside(total, m, k, y_zero_point, qmin, qmax)
