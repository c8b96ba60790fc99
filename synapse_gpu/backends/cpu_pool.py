"""Fast max pooling for the CPU backend: same bits as reference/pool.py:max_pool.

The input is padded with -128, the identity of max on int8, far enough that every
window fits; each kernel tap is then one strided view, and the output is the
elementwise maximum over the taps. A padding value never beats a valid tap, and a
window without a valid tap gives -128: the reference's rule, with no gather.
"""
import numpy as np

from ..reference.pool import output_size
from ..reference.requant import INT8_MIN


def max_pool(x, *, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0):
    x = np.asarray(x, dtype=np.int8)
    nd = len(kernel_shape)
    strides = strides or [1] * nd
    pads = pads or [0] * (2 * nd)
    dilations = dilations or [1] * nd
    sp = x.shape[2:]
    outs = [output_size(sp[i], kernel_shape[i], strides[i], pads[i], pads[nd + i], dilations[i],
                        ceil_mode) for i in range(nd)]
    # the last window ends at (out - 1) * s + (k - 1) * d + 1 in padded coordinates
    ends = [max(0, (outs[i] - 1) * strides[i] + (kernel_shape[i] - 1) * dilations[i] + 1
                - pads[i] - sp[i]) for i in range(nd)]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], ends[i]) for i in range(nd)],
                constant_values=INT8_MIN)
    y = None
    for tap in np.ndindex(*kernel_shape):
        view = xp[(Ellipsis,) + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                      for t, d, o, s in zip(tap, dilations, outs, strides))]
        if y is None:
            y = view.copy()
        else:
            np.maximum(y, view, out=y)
    return y
