"""The conformance set: small models that together cover every op kind and shape class.

Each case is one op (sometimes two) on graph inputs, so a broken kernel fails
its own cases. Shape classes: 1D/2D/3D convs, strides, dilations, asymmetric
pads, depthwise and grouped, 1x1, weight zero points, fused clamps; dense on 2D
and 3D inputs with both weight layouts; batched and broadcast matmul; broadcast
add and mul; pools with padding, dilation, ceil mode, with and without padded
counts; softmax on the last and a middle axis; concat of differently scaled
inputs; every pad mode. Weights and biases come from generated_int8() (sha256
counter mode, the same bytes everywhere, independent of numpy's random streams);
the models are shipped as .syn files next to this module, so the golden vectors
never depend on a float computation (a LUT table from libm's exp) redone on the
verifying machine. `python -m synapse_gpu.verify --regenerate` rewrites them.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from .. import build
from ..graph import GraphBuilder
from ..reference.layernorm import layernorm_params
from ..reference.lrn import lrn_params


def generated_int8(tag, shape):
    """int8 array of `shape` from sha256(tag, counter): identical on every machine and numpy."""
    n = math.prod(shape)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"synapse-golden-v1\0{tag}\0{i}".encode()).digest()
        i += 1
    return np.frombuffer(bytes(out[:n]), dtype=np.int8).reshape(shape)


def _w(case, role, *shape):
    w = generated_int8(f"{case}/{role}", shape)
    return np.where(w == -128, -127, w).astype(np.int8)  # symmetric int8 weights


def _bias(case, n):
    return generated_int8(f"{case}/bias", (n,)).astype(np.int32) * 37


def _scales(case, n):
    return 0.002 + (generated_int8(f"{case}/scale", (n,)).astype(np.float32) + 128) / 256 * 0.006


def _ln_params(s_x):
    w = generated_int8("layernorm/gamma", (16,)).astype(np.float32) / 64
    return layernorm_params(w, generated_int8("layernorm/beta", (16,)) / 256, 1e-5, s_x, 0.03)


def _conv(name, in_shape, w_shape, **kw):
    def make(b, x):
        return build.conv(b, x, _w(name, "w", *w_shape), _scales(name, w_shape[0]),
                          _bias(name, w_shape[0]), y_scale=0.07, y_zero_point=-5, **kw)
    return name, [in_shape], make


def _unary(name, in_shape, fn):
    return name, [in_shape], fn


def _binary(name, a_shape, b_shape, fn):
    return name, [a_shape, b_shape], fn


CASES = [
    _conv("conv1d_strided_relu", (4, 16), (6, 4, 3), strides=[2], pads=[1, 1], relu=True),
    _conv("conv2d_same", (3, 9, 9), (8, 3, 3, 3), pads="same_upper"),
    _conv("conv2d_strided_dilated_asym", (4, 11, 10), (5, 4, 3, 2), strides=[2, 1],
          dilations=[2, 1], pads=[1, 0, 2, 1], w_zero_point=3),
    _conv("conv2d_depthwise", (8, 7, 7), (8, 1, 3, 3), pads=[1, 1, 1, 1], group=8),
    _conv("conv2d_grouped", (4, 7, 7), (6, 2, 3, 3), group=2, relu=True),
    _conv("conv2d_pointwise", (16, 5, 5), (12, 16, 1, 1)),
    _conv("conv3d", (2, 4, 5, 5), (3, 2, 2, 3, 3), pads=[0, 1, 1, 1, 1, 1]),
    _unary("dense_2d", (20,), lambda b, x: build.dense(
        b, x, _w("dense_2d", "w", 7, 20), _scales("dense_2d", 7), _bias("dense_2d", 7),
        y_scale=0.1, y_zero_point=2)),
    _unary("dense_3d_kxm", (3, 12), lambda b, x: build.dense(
        b, x, _w("dense_3d", "w", 12, 5), 0.004, None, y_scale=0.06, y_zero_point=-1,
        trans_w=False, relu=True)),
    _binary("matmul_batched", (2, 3, 8), (2, 8, 5), lambda b, x, y: build.matmul(
        b, x, y, y_scale=0.3, y_zero_point=4)),
    _binary("matmul_broadcast", (2, 3, 8), (1, 8, 5), lambda b, x, y: build.matmul(
        b, x, y, y_scale=0.3, y_zero_point=-4)),
    _unary("requantize", (3, 5, 5), lambda b, x: build.requantize(
        b, x, y_scale=0.013, y_zero_point=9)),
    _unary("batchnorm", (4, 5, 5), lambda b, x: build.batchnorm(
        b, x, [0.5, 1.2, -0.8, 2.0], [0.1, -0.2, 0.3, 0.0], [0.05, 0.0, -0.1, 0.2],
        [1.0, 0.5, 2.0, 1.5], y_scale=0.05, y_zero_point=3, relu=True)),
    _unary("relu", (6, 4), lambda b, x: build.relu(b, x)),
    _unary("clip", (6, 4), lambda b, x: build.clip(b, x, -0.2, 0.3)),
    _unary("prelu", (4, 6, 3), lambda b, x: build.prelu(
        b, x, [0.1, 0.25, -0.3, 0.05], y_scale=0.03, y_zero_point=-2)),
    _unary("lut_sigmoid", (3, 7), lambda b, x: build.unary(
        b, x, "sigmoid", y_scale=1 / 256, y_zero_point=-128)),
    _unary("lut_leaky_relu", (3, 7), lambda b, x: build.unary(
        b, x, "leaky_relu", alpha=0.1, y_scale=0.03, y_zero_point=0)),
    _unary("softmax_last_axis", (3, 10), lambda b, x: build.softmax(b, x, -1)),
    _unary("softmax_channel_axis", (10, 2), lambda b, x: build.softmax(b, x, 1)),
    _binary("add_same_shape_relu", (4, 5, 5), (4, 5, 5), lambda b, x, y: build.add(
        b, x, y, y_scale=0.05, y_zero_point=-3, relu=True)),
    _binary("add_broadcast", (4, 5, 5), (4, 1, 1), lambda b, x, y: build.add(
        b, x, y, y_scale=0.04, y_zero_point=7)),
    _binary("mul_broadcast", (4, 5, 5), (1, 5, 5), lambda b, x, y: build.mul(
        b, x, y, y_scale=0.02, y_zero_point=-6)),
    _unary("max_pool_padded_ceil", (3, 9, 9), lambda b, x: build.max_pool(
        b, x, [3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    _unary("max_pool_1d_dilated", (3, 12), lambda b, x: build.max_pool(
        b, x, [3], strides=[1], dilations=[2])),
    _unary("avg_pool_exclude_pad", (3, 8, 8), lambda b, x: build.avg_pool(
        b, x, [3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0, y_scale=0.012,
        y_zero_point=1)),
    _unary("avg_pool_include_pad_ceil", (3, 7, 7), lambda b, x: build.avg_pool(
        b, x, [2, 2], strides=[2, 2], pads=[1, 1, 0, 0], count_include_pad=1, ceil_mode=1)),
    _unary("global_avg_pool_2d", (5, 6, 6), lambda b, x: build.global_avg_pool(
        b, x, y_scale=0.008, y_zero_point=-10)),
    _unary("global_avg_pool_1d", (5, 9), lambda b, x: build.global_avg_pool(b, x)),
    _unary("flatten", (3, 4, 5), lambda b, x: build.flatten(b, x)),
    _unary("reshape", (3, 4, 5), lambda b, x: build.reshape(b, x, [5, 12])),
    _unary("transpose", (3, 4, 5), lambda b, x: build.transpose(b, x, [0, 2, 3, 1])),
    _unary("identity", (3, 4), lambda b, x: b.add_node("identity", [x], out_quant=b.quant[x])),
    ("concat_rescaled", [(2, 4, 4), (3, 4, 4), (1, 4, 4)], lambda b, x, y, z: build.concat(
        b, [x, y, z], 1, y_scale=0.03, y_zero_point=0)),
    _binary("concat_last_axis", (2, 3), (2, 5), lambda b, x, y: build.concat(
        b, [x, y], 2, y_scale=0.02, y_zero_point=5)),
    _unary("pad_constant", (2, 4, 4), lambda b, x: build.pad(
        b, x, [0, 0, 1, 2, 0, 1, 0, 3], value=0.05)),
    _unary("pad_edge", (2, 4, 4), lambda b, x: build.pad(b, x, [0, 0, 2, 1, 0, 0, 1, 2], "edge")),
    _unary("pad_reflect", (2, 4, 4), lambda b, x: build.pad(b, x, [0, 0, 1, 2, 0, 0, 2, 1],
                                                            "reflect")),
    _unary("layernorm", (5, 16), lambda b, x: b.add_node(
        "layernorm", [x], attrs=dict(axis=2, x_zero_point=b.quant[x][1], y_zero_point=4,
                                     **_ln_params(b.quant[x][0])[1]),
        params=_ln_params(b.quant[x][0])[0], out_quant=(0.03, 4))),
    _unary("resize_linear", (2, 3, 4), lambda b, x: b.add_node(  # 2x, half_pixel weights
        "resize_linear", [x], attrs=dict(sizes=[2, 6, 8], frac_bits=[0, 8, 8],
                                         x_zero_point=b.quant[x][1],
                                         y_zero_point=-2, multiplier=1 << 23, shift=23),
        params=dict(indices=np.array([0, 1, 0, 1] + [0, 0, 0, 1, 1, 2, 1, 1, 2, 2, 2, 2]
                                     + [0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 2, 2, 3, 3, 3, 3], np.int32),
                    weights=np.array([0, 0] + [0, 64, 192, 64, 192, 0]
                                     + [0, 64, 192, 64, 192, 64, 192, 0], np.int32)),
        out_quant=(b.quant[x][0], -2))),
    _unary("lrn", (6, 3, 3), lambda b, x: b.add_node(
        "lrn", [x], attrs=dict(size=5, x_zero_point=b.quant[x][1]), params=lrn_params(
            b.quant[x][0], b.quant[x][1], 0.02, -3, 5, 0.05, 0.75, 1.0, channels=6),
        out_quant=(0.02, -3))),
    _unary("take", (3, 5, 4), lambda b, x: b.add_node(  # a strided slice, a reversal, a repeat
        "take", [x], attrs=dict(sizes=[2, 3, 6]), params=dict(indices=np.array(
            [0, 2, 4, 2, 0, 0, 0, 1, 1, 3, 3], np.int32)), out_quant=b.quant[x])),
    _unary("embedding_positional", (2,), lambda b, x: _embedding_positional(b, x)),
]


def _embedding_positional(b, x):
    """Token ids (a second input, int64) -> embedding rows + a positional constant; x (int8)
    gives the constant its batch."""
    ids = b.add_input("ids", (-1, 6, 4), 1.0, 0, dtype="int64")
    e = b.add_node("embedding", [ids], params=dict(table=_w("embedding", "table", 50, 8)),
                   out_quant=(0.05, 3))
    p = b.add_node("constant", [x], params=dict(value=_w("embedding", "position", 6, 8)),
                   out_quant=(0.02, -9))
    return build.add(b, e, p, y_scale=0.06, y_zero_point=-1)

# Input quantizations: varied zero points, both ends of the range included.
_INPUT_QUANT = [(0.02, 0), (0.015, -128), (0.03, 127), (0.01, -17)]


def build_case(name):
    """The Graph of conformance case `name` (inputs "x0", "x1", ... with a dynamic batch)."""
    for case, shapes, make in CASES:
        if case == name:
            b = GraphBuilder()
            xs = [b.add_input(f"x{i}", (-1, *s), *_INPUT_QUANT[(i + len(case)) % 4])
                  for i, s in enumerate(shapes)]
            b.add_output(make(b, *xs), "y")
            return b.build({"name": f"conformance/{name}"})
    raise KeyError(name)
