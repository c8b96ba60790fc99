"""Conv and dense layers as small onnxruntime graphs (MLAS's int8 kernels), built once per layer.

conv (1-D, 2-D): one QLinearConv, accumulation and requantization fused in MLAS
(`OrtConv` says how the scales make MLAS's requantization the rule), then Clip where a
fused activation narrows [qmin, qmax].
dense: MatMulInteger -> Add bias (int32) -> the float32 requantization of
`cpu_conv.requant_f32` as two ONNX ops: DequantizeLinear of the int32 sum with the
per-column scale M (by its ONNX definition f32(acc + bias) * M: one rounding to
float32, one IEEE multiplication), then QuantizeLinear with scale 1 and zero point z_y
(p / 1 = p, round half to even, + z_y, saturate), then Clip if narrowed.
Graph optimizations are off, so onnxruntime runs the ops as written (no fusion into a
kernel with another rounding, no layout change). Whether this machine's kernels give
the rule's bits is what the self-test of cpu_engines.py decides, per engine.

Activations enter as uint8 codes: x + 128 with the zero point z_x + 128, an exact
change of representation (the bits of int8 x with the sign bit flipped). Weights are
int8 (engine "u8s8") or shifted the same way to uint8 with z_w + 128 (engine "u8u8").
MLAS applies the zero points inside: sum (x - z_x)(w - z_w) = sum x w - z_w sum x
- z_x sum w + K z_x z_w with x, w, z in [0, 255]; each term is at most K * 255 * 255,
below 2^31 for K <= 33025 (cpu_engines.FULL_SCALE_K), and MLAS's int32 additions wrap, so the total,
which the load-time proof keeps below 2^31, comes out exact even past that length.

A layer the graphs cannot express returns None from the builders and stays on the
float32-BLAS path: per-channel weight zero points that differ (QLinearConv here takes
one), 3-D convs, multipliers outside M_RANGE or not exactly a float32.
"""
from __future__ import annotations

import os

import numpy as np

from ..reference.conv import conv_output_shape, resolve_pads
from ..reference.requant import INT8_MAX, INT8_MIN

OPSET = 13


def threads():
    """Threads per layer: $SYNAPSE_CPU_THREADS, else the cores this process may use."""
    if os.environ.get("SYNAPSE_CPU_THREADS"):
        return max(1, int(os.environ["SYNAPSE_CPU_THREADS"]))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


SMALL_MACS = 1 << 20  # per sample: below this a layer runs on one thread (no hand-off cost)


def _session(nodes, x_info, inits, out_type, macs):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "layer", [x_info], [helper.make_tensor_value_info("y", out_type, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ops as written
    so.intra_op_num_threads = threads() if macs >= SMALL_MACS else 1
    # one pool per layer: a pool that spins after its layer would take the cores from the next
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _tail(acc, bias, M32, y_zero_point, qmin, qmax, fused):
    """Nodes and constants after the (rows, M) accumulation `acc`: + bias, then (fused)
    the requantization."""
    from onnx import TensorProto, helper

    M = len(bias)
    nodes = [helper.make_node("Add", [acc, "bias"], ["acc_b" if fused else "y"])]
    inits = {"bias": np.asarray(bias, np.int32).reshape(M)}
    if fused:
        # DequantizeLinear on int32: f32(acc + bias) * M, one rounding each (steps 1, 2);
        # QuantizeLinear with scale 1: clamp(round_half_even(p) + z_y) (step 3)
        nodes += [helper.make_node("DequantizeLinear", ["acc_b", "M"], ["p"], axis=1),
                  helper.make_node("QuantizeLinear", ["p", "one", "zy"], ["q" if (qmin, qmax) != (
                      INT8_MIN, INT8_MAX) else "y"])]
        inits.update(M=np.asarray(M32, np.float32).reshape(M), one=np.float32(1),
                     zy=np.int8(y_zero_point))
        if (qmin, qmax) != (INT8_MIN, INT8_MAX):  # a fused activation narrows the clamp
            nodes.append(helper.make_node("Clip", ["q", "lo", "hi"], ["y"]))
            inits.update(lo=np.int8(qmin), hi=np.int8(qmax))
    return nodes, inits, (TensorProto.INT8 if fused else TensorProto.INT32)


def to_u8(x):
    """int8 codes -> uint8 codes x + 128 (flip the sign bit)."""
    return np.bitwise_xor(np.asarray(x, np.int8).view(np.uint8), np.uint8(0x80))


def _weights(w, w_zero_point, weight_dtype):
    """(weights, zero point) in the engine's weight type; shifting by 128 keeps w - z_w."""
    if weight_dtype == np.uint8:
        return to_u8(w), np.asarray(w_zero_point, np.int64) + 128
    return np.asarray(w, np.int8), np.asarray(w_zero_point, np.int64)


class OrtConv:
    """conv1d/conv2d as one QLinearConv (accumulation and requantization fused in MLAS);
    graphs built per input spatial shape (pads may depend on it).

    The scales make MLAS's requantization the rule: x_scale = y_scale = 1 and w_scale = M,
    so its per-channel scale x_scale * w_scale / y_scale is M exactly, applied as
    f32(acc + bias) * M, rounded half to even (the x86 conversion), + z_y, saturated to
    uint8 (int8 + 128). A fused activation's narrower clamp is a Clip after it.
    """

    def __init__(self, weight_dtype, *, w, bias, M32, w_zero_point, x_zero_point, y_zero_point,
                 strides, pads, dilations, group, qmin, qmax):
        w = np.asarray(w)
        self.nd = w.ndim - 2
        wq, wz = _weights(w, w_zero_point, weight_dtype)
        self.consts = dict(
            w=wq.reshape(wq.shape[:2] + (1,) * (self.nd == 1) + wq.shape[2:]),
            wz=np.asarray(wz.reshape(-1)[0], weight_dtype), ws=np.asarray(M32, np.float32).reshape(-1),
            xz=np.uint8(int(x_zero_point) + 128), yz=np.uint8(int(y_zero_point) + 128),
            one=np.float32(1), b=np.asarray(bias, np.int32).reshape(-1))
        self.C = w.shape[1] * group
        self.clamp = None if (qmin, qmax) == (INT8_MIN, INT8_MAX) else (qmin + 128, qmax + 128)
        self.kernel = tuple(w.shape[2:])
        self.strides, self.dilations, self.pads, self.group = strides, dilations, pads, group
        self.sessions = {}

    def _build(self, spatial):
        from onnx import TensorProto, helper

        pads = pads_nd = resolve_pads(self.pads, spatial, self.kernel, self.strides, self.dilations)
        strides, dilations, kernel = list(self.strides), list(self.dilations), list(self.kernel)
        if self.nd == 1:  # as a 2-D conv on a height-1 image
            pads = [0, pads[0], 0, pads[1]]
            strides, dilations, kernel = [1] + strides, [1] + dilations, [1] + kernel
        nodes = [helper.make_node("QLinearConv", ["x", "one", "xz", "w", "ws", "wz", "one", "yz", "b"],
                                  ["q" if self.clamp else "y"], kernel_shape=kernel, strides=strides,
                                  pads=pads, dilations=dilations, group=self.group)]
        consts = dict(self.consts)
        if self.clamp:
            nodes.append(helper.make_node("Clip", ["q", "lo", "hi"], ["y"]))
            consts.update(lo=np.uint8(self.clamp[0]), hi=np.uint8(self.clamp[1]))
        x_info = helper.make_tensor_value_info("x", TensorProto.UINT8, [None, self.C]
                                               + [1] * (self.nd == 1) + list(spatial))
        out = conv_output_shape(spatial, self.kernel, self.strides, pads_nd, self.dilations)
        macs = int(np.prod(out)) * int(np.prod(self.consts["w"].shape))
        return _session(nodes, x_info, consts, TensorProto.UINT8, macs)

    def __call__(self, x):
        spatial = x.shape[2:]
        sess = self.sessions.get(spatial)
        if sess is None:
            sess = self.sessions[spatial] = self._build(spatial)
        xu = to_u8(x)
        if self.nd == 1:
            xu = xu[:, :, None, :]
        y = sess.run(None, {"x": xu})[0]
        np.bitwise_xor(y, np.uint8(0x80), out=y)  # uint8 codes back to int8
        y = y.view(np.int8)
        return y[:, :, 0, :] if self.nd == 1 else y


class OrtDense:
    """dense: x (..., K) @ W (K, M) with MatMulInteger (per-column zero points allowed)."""

    def __init__(self, weight_dtype, *, w, bias, M32, w_zero_point, x_zero_point, y_zero_point,
                 trans_w, qmin, qmax, fused):
        from onnx import TensorProto, helper

        W = np.asarray(w).T if trans_w else np.asarray(w)  # (K, M)
        self.K, M = W.shape
        wq, wz = _weights(W, w_zero_point, weight_dtype)
        wz = wz.reshape(-1)
        wz = np.asarray(wz[0] if np.all(wz == wz[0]) else wz, weight_dtype)
        mm = helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["acc"])
        nodes, inits, out_type = _tail("acc", bias, M32, y_zero_point, qmin, qmax, fused)
        x_info = helper.make_tensor_value_info("x", TensorProto.UINT8, [None, self.K])
        self.sess = _session([mm] + nodes, x_info, dict(
            w=np.ascontiguousarray(wq), xz=np.uint8(int(x_zero_point) + 128), wz=wz, **inits), out_type,
            self.K * M)

    def __call__(self, x):
        rows = to_u8(x).reshape(-1, self.K)
        y = self.sess.run(None, {"x": rows})[0]
        return y.reshape(np.shape(x)[:-1] + y.shape[-1:])


# multipliers the self-test covers (its cases include both ends)
M_RANGE = (2.0 ** -32, 2.0 ** 20)


def in_range(M32):
    return M32 is not None and bool(np.all((M32 >= M_RANGE[0]) & (M32 <= M_RANGE[1])))


def uniform(a):
    a = np.asarray(a).reshape(-1)
    return bool(np.all(a == a[0]))


def _bias(p, M):
    return np.zeros(M, np.int32) if p.get("bias") is None else p["bias"]


def conv_layer(weight_dtype, M32, **p):
    """An OrtConv for a conv node's keywords, or None when the graph cannot express it."""
    if np.ndim(p["w"]) not in (3, 4) or not uniform(p["w_zero_point"]) or not in_range(M32):
        return None
    return OrtConv(weight_dtype, M32=M32, w=p["w"], bias=_bias(p, len(p["w"])),
                   w_zero_point=p["w_zero_point"], x_zero_point=p["x_zero_point"],
                   y_zero_point=p["y_zero_point"], strides=p["strides"], pads=p["pads"],
                   dilations=p["dilations"], group=int(p["group"]),
                   qmin=p.get("qmin", INT8_MIN), qmax=p.get("qmax", INT8_MAX))


def dense_layer(weight_dtype, M32, fused=True, **p):
    """An OrtDense for a dense node's keywords, or None when the graph cannot express it."""
    if fused and not in_range(M32):
        return None
    M = np.shape(p["w"])[0 if p["trans_w"] else 1]
    return OrtDense(weight_dtype, M32=M32, fused=fused, w=p["w"], bias=_bias(p, M),
                    w_zero_point=p["w_zero_point"], x_zero_point=p["x_zero_point"],
                    y_zero_point=p["y_zero_point"], trans_w=p["trans_w"],
                    qmin=p.get("qmin", INT8_MIN), qmax=p.get("qmax", INT8_MAX))
