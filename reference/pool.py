"""Pooling: max_pool, avg_pool (N-d windows) and global_avg_pool.

Layout (N, C, *spatial). A window along spatial axis i starts at o * strides[i] -
pads[i] and has taps t * dilations[i], t < kernel_shape[i]. Output size per axis:
    out = floor_or_ceil((n + pad_begin + pad_end - dilation * (k - 1) - 1) / stride) + 1
with ceil under ceil_mode; under ceil_mode a last window that would start at
input position >= n (in the end padding or past it) is dropped: ONNX's rule as
ONNX Runtime applies it. A tap is *valid* inside the input [0, n) and *in the
padded region* inside [-pad_begin, n + pad_end).
"""
import numpy as np

from .requant import INT8_MAX, INT8_MIN, requant, requant_zp_inside


def output_size(n, k, stride, pad_begin, pad_end, dilation, ceil_mode):
    """Output length of one spatial axis (module docstring), integers only."""
    num = n + pad_begin + pad_end - dilation * (k - 1) - 1
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + pad_begin:
        out -= 1
    return out


def _window_taps(x, kernel_shape, strides, pads, dilations, ceil_mode):
    """Yield, for each kernel tap in row-major order, the (N, C, *out) arrays
    (x at the tap, tap is valid, tap is in the padded region)."""
    nd = len(kernel_shape)
    strides = strides or [1] * nd
    pads = pads or [0] * (2 * nd)
    dilations = dilations or [1] * nd
    sp = x.shape[2:]
    outs = [output_size(sp[i], kernel_shape[i], strides[i], pads[i], pads[nd + i],
                        dilations[i], ceil_mode) for i in range(nd)]
    for tap in np.ndindex(*kernel_shape):
        pos = np.meshgrid(*[np.arange(outs[i]) * strides[i] - pads[i] + tap[i] * dilations[i]
                            for i in range(nd)], indexing="ij")
        valid = np.ones(outs, dtype=bool)
        in_pad = np.ones(outs, dtype=bool)
        for i, p in enumerate(pos):
            valid &= (p >= 0) & (p < sp[i])
            in_pad &= (p >= -pads[i]) & (p < sp[i] + pads[nd + i])
        values = x[(Ellipsis, *[np.clip(p, 0, sp[i] - 1) for i, p in enumerate(pos)])]
        yield values, valid, in_pad


def max_pool(x, *, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0):
    """y = max of x over the valid taps of the window; padding never wins.

    A window without a valid tap (possible only with dilations or pads >= kernel)
    gives -128, the identity of max on int8. Same scale and zero point in and out; no arithmetic.
    """
    x = np.asarray(x, dtype=np.int8)
    y = None
    for values, valid, _ in _window_taps(x, kernel_shape, strides, pads, dilations, ceil_mode):
        v = np.where(valid, values, np.int8(INT8_MIN))
        y = v if y is None else np.maximum(y, v)
    return y.astype(np.int8)


def avg_pool(x, *, multiplier, shift, kernel_shape, x_zero_point, y_zero_point,
             strides=None, pads=None, dilations=None, ceil_mode=0, count_include_pad=0,
             qmin=INT8_MIN, qmax=INT8_MAX):
    """sum = sum over the valid taps of (x - z_x)   (padding is real 0: adds nothing)
    n   = taps in the padded region if count_include_pad else valid taps
    y   = requant_zp_inside(sum; multiplier[n], shift[n], z_y)
        = clamp(rhe(f32(f32(sum) * M/n) + z_y), qmin, qmax)

    multiplier/shift are tables indexed by n = 0..V (V = prod(kernel_shape)), entry n
    holding M/n = f32(f32(s_x / s_y) / n) (entry 0 is unused: sum = 0 there, y = z_y).
    So the division by n and the rescale are ONE rounding, half to even on the
    output code (z_y added first, as ONNX Runtime's QLinearAveragePool rounds
    float(avg / s_y + z_y)); n never divides an integer. n counts like ONNX
    AveragePool: with count_include_pad, taps past the end padding (ceil_mode)
    do not count.
    Bound: |sum| <= 255 * V, inside int32 for V < 8421505 (and exact in float32
    for V < 65794).
    """
    x = np.asarray(x, dtype=np.int64)
    total = 0
    count = 0
    for values, valid, in_pad in _window_taps(x, kernel_shape, strides, pads, dilations, ceil_mode):
        total = total + np.where(valid, values - x_zero_point, 0)
        count = count + (in_pad if count_include_pad else valid).astype(np.int64)
    m = np.asarray(multiplier, dtype=np.int64)[count]
    k = np.asarray(shift, dtype=np.int64)[count]
    return requant_zp_inside(total, m, k, y_zero_point, qmin, qmax)


def global_avg_pool(x, *, multiplier, shift, x_zero_point, y_zero_point,
                    qmin=INT8_MIN, qmax=INT8_MAX):
    """y[n, c] = requant(sum over all spatial positions of (x - z_x); multiplier, shift, z_y),
    output (N, C, 1, ..., 1).

    M = f32(s_x / f32(s_y * n)), n = spatial size: the order ONNX Runtime's
    QLinearGlobalAveragePool uses, which this rule then reproduces bit for bit.
    Bound: |sum| <= 255 * n, inside int32 for n < 8421505 (ONNX Runtime itself
    requires n < 2^24 and 2^-32 <= M < 256).
    """
    x = np.asarray(x, dtype=np.int64)
    total = (x - x_zero_point).sum(axis=tuple(range(2, x.ndim)), keepdims=True)
    return requant(total, multiplier, shift, y_zero_point, qmin, qmax)
