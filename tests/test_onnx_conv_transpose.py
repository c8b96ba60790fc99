"""ConvTranspose (synapse_gpu/onnx/conv_transpose.py): zero insertion by take, then conv.

Independent computation: the transposed convolution as scatter-add loops over input
positions and kernel taps in int64 (its definition), requantized with the conv rule
(reference/requant.py); zero tolerance on every backend, per sample. onnxruntime runs
the QDQ file's ConvTranspose in float32: agreement measured
(`pytest tests/test_onnx_conv_transpose.py -s -k onnxruntime`).
"""
import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import SynapseError, UnsupportedOpError
from synapse_gpu.onnx.importer import import_onnx
from synapse_gpu.reference.requant import quantize_multiplier, requant

from ort_helpers import agreement, rand_i8, rng_for
from synapse_devices import device  # noqa: F401  (fixture)

F32 = np.float32
N = helper.make_node


def ct_model(x_shape, wq, ws, bias, attrs, q):
    s_x, zx, s_y, zy = q
    inits = {"xs": F32(s_x), "xz": np.int8(zx), "ys": F32(s_y), "yz": np.int8(zy), "wq": wq,
             "ws": np.asarray(ws, F32), "bq": bias, "bs": (F32(s_x) * np.asarray(ws, F32)).astype(F32)}
    axis = {"axis": 1} if np.ndim(ws) else {}
    nodes = [N("DequantizeLinear", ["x", "xs", "xz"], ["f"]),
             N("DequantizeLinear", ["wq", "ws"], ["w"], **axis),
             N("DequantizeLinear", ["bq", "bs"], ["b"], **({"axis": 0} if np.ndim(ws) else {})),
             N("ConvTranspose", ["f", "w", "b"], ["g"], **attrs),
             N("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "ct", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", *x_shape[1:]])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)


def loop_conv_transpose(x, wq, bias, zx, strides, pads, dil, out_pad, group):
    """int64 accumulators by the definition: y[o * s - pad + t * d] += x[o] w[t]."""
    nd = x.ndim - 2
    cin, cog = wq.shape[:2]
    k = wq.shape[2:]
    full = [(n - 1) * s + (kk - 1) * d + 1 + op for n, s, kk, d, op in
            zip(x.shape[2:], strides, k, dil, out_pad)]
    out = [f - pads[i] - pads[nd + i] for i, f in enumerate(full)]
    acc = np.zeros((x.shape[0], cog * group, *out), np.int64)
    d = x.astype(np.int64) - zx
    for pos in itertools.product(*[range(n) for n in x.shape[2:]]):
        for tap in itertools.product(*[range(kk) for kk in k]):
            o = [p * s - pads[i] + t * dl for i, (p, s, t, dl) in enumerate(zip(pos, strides, tap, dil))]
            if all(0 <= v < n for v, n in zip(o, out)):
                for gi in range(group):
                    xs = d[(slice(None), slice(gi * (cin // group), (gi + 1) * (cin // group)), *pos)]
                    ws = wq[(slice(gi * (cin // group), (gi + 1) * (cin // group)), slice(None), *tap)]
                    acc[(slice(None), slice(gi * cog, (gi + 1) * cog), *o)] += xs @ ws.astype(np.int64)
    return acc + bias.reshape(1, -1, *[1] * nd)


CASES = {  # name -> (input shape, weight shape (C_in, C_out/g, k...), attrs, per-channel)
    "2d_stride2": ((2, 3, 4, 5), (3, 4, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), True),
    "2d_grouped_dilated": ((2, 4, 3, 3), (4, 2, 2, 3), dict(strides=[1, 2], dilations=[2, 1], group=2, pads=[0, 1, 1, 0]), False),
    "1d_stride3": ((2, 2, 5), (2, 3, 4), dict(strides=[3], pads=[2, 0]), True),
    "2d_kernel_equals_stride": ((2, 2, 3, 3), (2, 2, 2, 2), dict(strides=[2, 2]), False),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("q", [(0.05, -128, 0.08, 127), (0.04, 127, 0.06, -128)])
def test_conv_transpose_exact_on_every_backend(device, name, q):  # noqa: F811
    shape, wshape, attrs, per_channel = CASES[name]
    rng = rng_for(len(name), q[1])
    wq = rand_i8(rng, wshape)
    wq[wq == -128] = -127
    group = attrs.get("group", 1)
    M = wshape[1] * group
    ws = rng.uniform(0.005, 0.02, wshape[1]).astype(F32) if per_channel else F32(0.01)
    bias = rng.integers(-2000, 2000, M).astype(np.int32)
    m = ct_model(shape, wq, ws, bias, attrs, q)
    g = import_onnx(m)
    assert [n.op for n in g.nodes] == ["pad", "take", f"conv{len(shape) - 2}d"]
    x = rand_i8(rng, shape)
    y = InferenceSession(g, device=device).run(None, {"x": x}, output_type="int8")[0]
    nd = len(shape) - 2
    acc = loop_conv_transpose(x, wq, bias, q[1], attrs.get("strides", [1] * nd),
                              attrs.get("pads", [0] * 2 * nd), attrs.get("dilations", [1] * nd),
                              attrs.get("output_padding", [0] * nd), group)
    mult, sh = quantize_multiplier(np.broadcast_to((F32(q[0]) * np.asarray(ws, F32)) / F32(q[2]), (M,)).astype(F32))
    want = requant(acc, mult.reshape(1, -1, *[1] * nd), sh.reshape(1, -1, *[1] * nd), q[3])
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(
        InferenceSession(g, device=device).run(None, {"x": x[1:]}, output_type="int8")[0], y[1:])


def test_onnxruntime_agreement():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ours, theirs = [], []
    for seed, (name, (shape, wshape, attrs, per_channel)) in enumerate(sorted(CASES.items()) * 3):
        rng = np.random.default_rng(seed)
        wq = rand_i8(rng, wshape)
        M = wshape[1] * attrs.get("group", 1)
        ws = rng.uniform(0.005, 0.02, wshape[1]).astype(F32) if per_channel else F32(0.01)
        q = (0.05, int(rng.integers(-128, 128)), 0.08, int(rng.integers(-128, 128)))
        m = ct_model(shape, wq, ws, rng.integers(-2000, 2000, M).astype(np.int32), attrs, q)
        x = rand_i8(rng, (4, *shape[1:]))
        ours.append(InferenceSession(import_onnx(m), device="cpu").run(None, {"x": x}, output_type="int8")[0].ravel())
        theirs.append(ort.InferenceSession(m.SerializeToString(), so, providers=[
            "CPUExecutionProvider"]).run(None, {"x": x})[0].ravel())
    frac, dmax = agreement("ConvTranspose (QDQ, int8)", np.concatenate(ours), np.concatenate(theirs))
    assert frac > 0.99 and dmax <= 1


def test_output_shape_is_refused_with_advice():
    m = ct_model((1, 2, 3, 3), rand_i8(rng_for(1), (2, 2, 2, 2)), F32(0.01), np.zeros(2, np.int32),
                 dict(strides=[2, 2], output_shape=[6, 6]), (0.05, 0, 0.05, 0))
    with pytest.raises(UnsupportedOpError, match=r"\(op ConvTranspose\).*output_padding"):
        import_onnx(m)


@pytest.mark.parametrize("then_conv", [False, True])
def test_quantize_static_qoperator_file_is_refused_with_advice(tmp_path, then_conv):
    # quantize_static (QOperator) leaves ConvTranspose float: its output unquantized when it
    # ends the model, its weight float when a quantized op follows; both errors say use QDQ
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    rng = rng_for(9)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["h", "w2"], ["t" if then_conv else "y"],
                              strides=[2, 2])]
    inits = {"w1": rng.normal(0, .3, (4, 3, 3, 3)), "w2": rng.normal(0, .3, (4, 5, 2, 2))}
    if then_conv:
        nodes.append(helper.make_node("Conv", ["t", "w3"], ["y"]))
        inits["w3"] = rng.normal(0, .3, (2, 5, 1, 1))
    g = helper.make_graph(nodes, "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v.astype(F32), k) for k, v in inits.items()])
    src, out = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    with open(src, "wb") as f:
        f.write(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                  ir_version=9).SerializeToString())

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": rng.normal(0, 1, (1, 3, 6, 6)).astype(F32)} for _ in range(2)])

        def get_next(self):
            return next(self.it, None)
    quantize_static(src, out, Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    with pytest.raises(SynapseError, match=r"\(op ConvTranspose\).*QOperator format leaves "
                                           r"ConvTranspose in float.*QuantFormat.QDQ"):
        import_onnx(out)
