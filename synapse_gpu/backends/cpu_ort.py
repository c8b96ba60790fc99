"""onnxruntime graphs (MLAS's int8 kernels) that compute Synapse layers bit for bit.

`OrtGraph` builds one onnxruntime graph over uint8 activation codes; `OrtRun` runs it on
int8 tensors. A single conv or dense layer (the self-test's unit, cpu_engines.py) and a
fused run of many steps (cpu_fused.py) are both built from the lowerings here, so the
self-test exercises exactly the nodes, types and layouts the model's graphs use.

conv (1-D, 2-D): com.microsoft QLinearConv with channels_last=1 on an NHWC view
(onnxruntime's own NHWC form: its ONNX-domain QLinearConv transposes to NHWC around the
same MLAS kernel; a fused run keeps activations NHWC between convs), accumulation and
requantization fused in MLAS (`lower_conv` says how the scales make MLAS's
requantization the rule), then Clip where a fused activation narrows [qmin, qmax].
A 1-D conv is the 2-D conv of a height-1 image.
dense: MatMulInteger -> Add bias (int32) -> `lower_requant`, the float32 requantization
of `cpu_conv.requant_f32` as two ONNX ops: DequantizeLinear of the int32 sum with the
per-column scale M (by its ONNX definition f32(acc + bias) * M: one rounding to
float32, one IEEE multiplication), then QuantizeLinear with scale 1 and zero point
z_y + 128 (p / 1 = p, round half to even, + z_y + 128, saturate to [0, 255]: the int8
rule shifted by 128), then Clip if narrowed.
Graph optimizations are off, so onnxruntime runs the ops as written (no fusion into a
kernel with another rounding, no layout change). Whether this machine's kernels give
the rule's bits is what the self-test of cpu_engines.py decides, per engine.

Activations are uint8 codes inside: x + 128 with the zero point z_x + 128, an exact
change of representation (the bits of int8 x with the sign bit flipped), done once at
a graph's boundary. Weights are int8 (engine "u8s8") or shifted the same way to uint8
with z_w + 128 (engine "u8u8").
MLAS applies the zero points inside: sum (x - z_x)(w - z_w) = sum x w - z_w sum x
- z_x sum w + K z_x z_w with x, w, z in [0, 255]; each term is at most K * 255 * 255,
below 2^31 for K <= 33025 (cpu_engines.FULL_SCALE_K), and MLAS's int32 additions wrap, so the total,
which the load-time proof keeps below 2^31, comes out exact even past that length.

A layer the graphs cannot express gets None from `conv_layer` / `dense_layer` (and is
not lowered into a fused run): per-channel weight zero points that differ
(QLinearConv takes one), 3-D convs, multipliers outside M_RANGE or not exactly a float32.
"""
from __future__ import annotations

import os

import numpy as np

from ..reference.conv import resolve_pads
from ..reference.requant import INT8_MAX, INT8_MIN

OPSET = 13


def threads():
    """Threads per graph: $SYNAPSE_CPU_THREADS, else the cores this process may use."""
    if os.environ.get("SYNAPSE_CPU_THREADS"):
        return max(1, int(os.environ["SYNAPSE_CPU_THREADS"]))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


SMALL_MACS = 1 << 20  # per sample: below this a graph runs on one thread (no hand-off cost)


_SIGN, _I8 = np.uint8(0x80), np.dtype(np.int8)


def to_u8(x):
    """int8 codes -> uint8 codes x + 128 (flip the sign bit)."""
    if type(x) is not np.ndarray or x.dtype != _I8:
        x = np.asarray(x, np.int8)
    return np.bitwise_xor(x.view(np.uint8), _SIGN)


def to_i8(y):
    """uint8 codes -> int8 codes y - 128, in place."""
    np.bitwise_xor(y, _SIGN, out=y)
    return y.view(np.int8)


def _channels_last(rank):
    return [0] + list(range(2, rank)) + [1]


class OrtGraph:
    """An onnxruntime graph under construction. Values are handles (ints); each has a
    rank and views by layout ("nchw": the Synapse layout; "nhwc": channels last), the
    Transpose between them added once, where first asked for."""

    def __init__(self):
        self.nodes, self.inits, self.inputs = [], {}, []
        self.views, self.ranks = [], []
        self.macs = 0  # per sample, over the graph's convs and dense layers
        self._count = 0

    def _name(self, base):
        self._count += 1
        return f"{base}{self._count}"

    def const(self, value):
        name = self._name("c")
        self.inits[name] = np.asarray(value)
        return name

    def op(self, op_type, inputs, domain=None, **attrs):
        """One node with one output; returns the output's name."""
        from onnx import helper

        out = self._name("t")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], domain=domain, **attrs))
        return out

    def value(self, name, rank, layout="nchw"):
        self.views.append({layout: name})
        self.ranks.append(rank)
        return len(self.views) - 1

    def input(self, shape, elem_type=None):
        """A graph input of the given NCHW shape (axis 0 the batch), uint8 codes."""
        from onnx import TensorProto, helper

        name = self._name("x")
        self.inputs.append(helper.make_tensor_value_info(
            name, elem_type or TensorProto.UINT8, [None] + [int(d) for d in shape[1:]]))
        return self.value(name, len(shape))

    def view(self, h, layout):
        v = self.views[h]
        if layout not in v:
            perm = _channels_last(self.ranks[h])
            if layout == "nchw":
                perm = list(np.argsort(perm))
            v[layout] = self.op("Transpose", [next(iter(v.values()))], perm=[int(p) for p in perm])
        return v[layout]

    def layout(self, h):
        return next(iter(self.views[h]))

    def session(self, outputs, elem_type=None):
        """An InferenceSession computing the NCHW views of the handles `outputs`."""
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        names = [self.view(h, "nchw") for h in outputs]
        outs = [helper.make_tensor_value_info(n, elem_type or TensorProto.UINT8, None) for n in names]
        graph = helper.make_graph(self.nodes, "synapse", self.inputs, outs,
                                  [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ops as written
        so.intra_op_num_threads = threads() if self.macs >= SMALL_MACS else 1
        # an idle pool that spins would take the cores from the numpy steps between graphs
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess, names


class OrtRun:
    """int8 tensors in, int8 tensors out through one graph, built by
    `build(graph, input handles, input shapes) -> output handles` once per input shape
    (conv pads may depend on it). raw=True: int32 outputs, returned as they are."""

    def __init__(self, build, raw=False):
        self.build, self.raw, self.sessions = build, raw, {}

    def _session(self, shapes):
        key = tuple(s[1:] for s in shapes)
        if key not in self.sessions:
            from onnx import TensorProto

            g = OrtGraph()
            shapes = [(-1,) + s for s in key]
            outs = self.build(g, [g.input(s) for s in shapes], shapes)
            sess, names = g.session(outs, TensorProto.INT32 if self.raw else None)
            self.sessions[key] = sess, [i.name for i in g.inputs], names
        return self.sessions[key]

    def __call__(self, *xs):
        sess, ins, names = self._session([np.shape(x) for x in xs])
        ys = sess.run(names, {n: to_u8(x) for n, x in zip(ins, xs)})
        return [y if self.raw else to_i8(y) for y in ys]


# ---- lowerings: (graph, handle(s), node keywords, shapes) -> handle ------------------------

def _weights(w, w_zero_point, weight_dtype):
    """(weights, zero point) in the engine's weight type; shifting by 128 keeps w - z_w."""
    if weight_dtype == np.uint8:
        return to_u8(w), np.asarray(w_zero_point, np.int64) + 128
    return np.asarray(w, np.int8), np.asarray(w_zero_point, np.int64)


def _clamp(g, y, qmin, qmax):
    """Clip to a fused activation's narrower range, in uint8 codes."""
    if (qmin, qmax) == (INT8_MIN, INT8_MAX):
        return y
    return g.op("Clip", [y, g.const(np.uint8(qmin + 128)), g.const(np.uint8(qmax + 128))])


def lower_conv(g, x, shape, weight_dtype, M32, *, w, w_zero_point, x_zero_point,
               y_zero_point, strides, pads, dilations, group, bias=None, qmin=INT8_MIN,
               qmax=INT8_MAX, **_):
    """conv1d/conv2d as one com.microsoft QLinearConv on the NHWC view of x.

    The scales make MLAS's requantization the rule: x_scale = y_scale = 1 and w_scale = M,
    so its per-channel scale x_scale * w_scale / y_scale is M exactly, applied as
    f32(acc + bias) * M, rounded half to even (the x86 conversion), + z_y, saturated to
    uint8 (int8 + 128). A fused activation's narrower clamp is a Clip after it.
    """
    w = np.asarray(w)
    nd = w.ndim - 2
    kernel, strides, dilations = list(w.shape[2:]), list(strides), list(dilations)
    pads = resolve_pads(pads, shape[2:], kernel, strides, dilations)
    wq, wz = _weights(w, w_zero_point, weight_dtype)
    if nd == 1:  # as a 2-D conv on a height-1 image
        x = g.value(g.op("Unsqueeze", [g.view(x, "nchw"), g.const(np.array([2]))]), 4)
        wq, pads = wq[:, :, None, :], [0, pads[0], 0, pads[1]]
        strides, dilations, kernel = [1] + strides, [1] + dilations, [1] + kernel
    one = g.const(np.float32(1))
    y = g.op("QLinearConv", [
        g.view(x, "nhwc"), one, g.const(np.uint8(int(x_zero_point) + 128)), g.const(wq),
        g.const(np.asarray(M32, np.float32).reshape(-1)),
        g.const(np.asarray(np.asarray(wz).reshape(-1)[0], weight_dtype)), one,
        g.const(np.uint8(int(y_zero_point) + 128)), g.const(_bias(bias, len(w)))],
        domain="com.microsoft", channels_last=1, kernel_shape=kernel, strides=strides, pads=pads,
        dilations=dilations, group=int(group))
    y = g.value(_clamp(g, y, qmin, qmax), 4, "nhwc")
    g.macs += int(np.prod(shape[2:])) * int(w.size) // int(np.prod(strides))
    if nd == 1:
        y = g.value(g.op("Squeeze", [g.view(y, "nchw"), g.const(np.array([2]))]), 3)
    return y


def lower_requant(g, acc, bias, M32, y_zero_point, qmin, qmax):
    """Nodes after an int32 (rows, M) accumulation: + bias, then the requantization to
    uint8 codes (steps 1-2: DequantizeLinear f32(acc + bias) * M; step 3: QuantizeLinear
    with scale 1: saturate(round_half_even(p) + z_y + 128)). Returns the output's name."""
    acc = g.op("Add", [acc, g.const(bias)])
    p = g.op("DequantizeLinear", [acc, g.const(np.asarray(M32, np.float32).reshape(-1))], axis=-1)
    q = g.op("QuantizeLinear", [p, g.const(np.float32(1)), g.const(np.uint8(int(y_zero_point) + 128))])
    return _clamp(g, q, qmin, qmax)


def lower_dense(g, x, shape, weight_dtype, M32, *, w, w_zero_point, x_zero_point, y_zero_point,
                trans_w, bias=None, qmin=INT8_MIN, qmax=INT8_MAX, raw=False, **_):
    """dense: x (..., K) @ W (K, M) with MatMulInteger (per-column zero points allowed),
    then `lower_requant` (raw=True: the int32 acc + bias, for the self-test)."""
    W = np.asarray(w).T if trans_w else np.asarray(w)  # (K, M)
    wq, wz = _weights(W, w_zero_point, weight_dtype)
    wz = wz.reshape(-1)
    wz = np.asarray(wz[0] if np.all(wz == wz[0]) else wz, weight_dtype)
    acc = g.op("MatMulInteger", [g.view(x, "nchw"), g.const(np.ascontiguousarray(wq)),
                                 g.const(np.uint8(int(x_zero_point) + 128)), g.const(wz)])
    g.macs += int(np.prod(shape[1:])) * W.shape[1]
    bias = _bias(bias, W.shape[1])
    if raw:
        y = g.op("Add", [acc, g.const(bias)])
    else:
        y = lower_requant(g, acc, bias, M32, y_zero_point, qmin, qmax)
    return g.value(y, len(shape))


# multipliers the self-test covers (its cases include both ends)
M_RANGE = (2.0 ** -32, 2.0 ** 20)


def in_range(M32):
    return M32 is not None and bool(np.all((M32 >= M_RANGE[0]) & (M32 <= M_RANGE[1])))


def uniform(a):
    a = np.asarray(a).reshape(-1)
    return bool(np.all(a == a[0]))


def conv_lowerable(M32, p):
    return np.ndim(p["w"]) in (3, 4) and uniform(p["w_zero_point"]) and in_range(M32)


def _bias(bias, M):
    return np.zeros(M, np.int32) if bias is None else np.asarray(bias, np.int32).reshape(-1)


def conv_layer(weight_dtype, M32, **p):
    """One conv node's keywords as an OrtRun, or None when the graph cannot express it."""
    if not conv_lowerable(M32, p):
        return None
    def build(g, xs, shapes):
        return [lower_conv(g, xs[0], shapes[0], weight_dtype, M32, **p)]
    run = OrtRun(build)
    return lambda x: run(x)[0]


def dense_layer(weight_dtype, M32, fused=True, **p):
    """One dense node's keywords as an OrtRun (fused=False: int32 acc + bias), or None
    when the graph cannot express it."""
    if fused and not in_range(M32):
        return None
    def build(g, xs, shapes):
        return [lower_dense(g, xs[0], shapes[0], weight_dtype, M32, raw=not fused, **p)]
    run = OrtRun(build, raw=not fused)
    return lambda x: run(x)[0]
