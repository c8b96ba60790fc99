"""A small random int8 CNN built with the builder API: the test and demo workhorse.

It touches most of the op set: conv (+fused ReLU), batchnorm, prelu, a residual
add, max and average pooling, global average pooling, flatten and dense.
Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np

from .. import build
from ..graph import GraphBuilder


def tiny_cnn(seed=0, channels=8, size=8, classes=10):
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.integers(-127, 128, shape).astype(np.int8)

    def scale(n=None):
        return rng.uniform(0.002, 0.01, n).astype(np.float32)

    b = GraphBuilder()
    x = b.add_input("input", (-1, 1, size, size), scale=1 / 255, zero_point=-128)
    c = channels
    h = build.conv(b, x, w(c, 1, 3, 3), scale(c), rng.integers(-2000, 2000, c).astype(np.int32),
                   y_scale=0.05, y_zero_point=-20, pads="same_upper", relu=True, name="stem")
    h = build.batchnorm(b, h, rng.uniform(0.5, 1.5, c), rng.uniform(-0.2, 0.2, c),
                        rng.uniform(-0.1, 0.1, c), rng.uniform(0.5, 2, c), y_scale=0.05,
                        y_zero_point=3, name="bn")
    h = build.prelu(b, h, rng.uniform(0.05, 0.3, c), y_scale=0.05, y_zero_point=0, name="prelu")
    f = build.conv(b, h, w(c, c, 3, 3), scale(c), None, y_scale=0.08, y_zero_point=5,
                   pads=[1, 1, 1, 1], name="res_conv")
    h = build.add(b, h, f, y_scale=0.1, y_zero_point=-3, relu=True, name="residual")
    h = build.max_pool(b, h, [2, 2], strides=[2, 2], name="maxpool")
    h = build.avg_pool(b, h, [3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0,
                       y_scale=0.09, y_zero_point=1, name="avgpool")
    h = build.conv(b, h, w(2 * c, 1, 3, 3), scale(2 * c), None, y_scale=0.1, y_zero_point=0,
                   pads=[1, 1, 1, 1], group=c, relu=True, name="grouped")
    h = build.global_avg_pool(b, h, y_scale=0.05, y_zero_point=-10, name="gap")
    h = build.flatten(b, h, name="flatten")
    h = build.dense(b, h, w(classes, 2 * c), scale(classes), rng.integers(-300, 300, classes)
                    .astype(np.int32), y_scale=0.2, y_zero_point=0, name="fc")
    b.add_output(h, "logits")
    return b.build({"name": "tiny_cnn", "seed": str(seed)})
