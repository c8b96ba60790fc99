"""synapse_gpu.onnx.quantize: onnxruntime static quantization behind our checks."""
import argparse

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu import InferenceSession
from synapse_gpu.errors import (DtypeError, InputError, ModelFormatError, ShapeError,
                                SynapseError)
from synapse_gpu.onnx.quantize import add_quantize_arguments, quantize_onnx, run_quantize

C = 4  # conv output channels


def _float_model(path, batch="N"):
    """x (batch,1,6,6) -> Conv 3x3 -> BatchNorm -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    f = np.float32
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (C, 1, 3, 3)).astype(f), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, C).astype(f), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, C).astype(f), "gamma"),
        numpy_helper.from_array(rng.normal(0, 0.1, C).astype(f), "beta"),
        numpy_helper.from_array(rng.normal(0, 0.1, C).astype(f), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, C).astype(f), "var"),
        numpy_helper.from_array(rng.normal(0, 0.5, (3, C)).astype(f), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 3).astype(f), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def _calib(n=40, seed=1):
    return {"x": np.random.default_rng(seed).uniform(0, 1, (n, 1, 6, 6)).astype(np.float32)}


@pytest.fixture(scope="module")
def f32(tmp_path_factory):
    return _float_model(tmp_path_factory.mktemp("q") / "tiny_f32.onnx")


@pytest.fixture(scope="module")
def qdq(f32, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "tiny_int8.onnx"
    assert quantize_onnx(f32, _calib(), out, progress=False) == str(out)
    return str(out)


def _ops(path):
    return [n.op_type for n in onnx.load(path).graph.node]


def _init(path, name):
    return numpy_helper.to_array(next(t for t in onnx.load(path).graph.initializer if t.name == name))


def _weight_dq(path, op="Conv"):
    """The DequantizeLinear node feeding the weight (input 1) of the first `op`."""
    g = onnx.load(path).graph
    node = next(n for n in g.node if n.op_type == op)
    return next(n for n in g.node if n.output[0] == node.input[1])


def test_qdq_defaults(qdq):
    onnx.checker.check_model(onnx.load(qdq))
    ops = _ops(qdq)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "BatchNormalization" not in ops  # quant_pre_process folded Conv+BN
    for op in ("Conv", "Gemm"):
        dq = _weight_dq(qdq, op)
        w, s, z = (_init(qdq, name) for name in dq.input)
        assert w.dtype == np.int8 and z.dtype == np.int8
        n_out = C if op == "Conv" else 3
        assert s.shape == (n_out,) and np.all(z == 0)  # per-channel, symmetric
    q_in = next(n for n in onnx.load(qdq).graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    assert _init(qdq, q_in.input[2]).dtype == np.int8  # int8 activations


def test_qdq_close_to_float(f32, qdq):
    # Synapse's run of the quantized file, not onnxruntime's: on x86 without VNNI its
    # u8s8 kernels saturate on these full-range weights (tests/ort_helpers.py)
    x = _calib(16, seed=7)["x"]
    ref = ort.InferenceSession(f32, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = InferenceSession(qdq, device="cpu").run(None, {"x": x})[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_deterministic(f32, qdq, tmp_path):
    again = quantize_onnx(f32, _calib(), tmp_path / "again.onnx", progress=False)
    assert open(again, "rb").read() == open(qdq, "rb").read()


def test_options(f32, tmp_path):
    calib = _calib()
    qop = quantize_onnx(f32, calib, tmp_path / "qop.onnx", fmt="qoperator", progress=False)
    assert "QLinearConv" in _ops(qop)

    pt = quantize_onnx(f32, calib, tmp_path / "pt.onnx", per_channel=False, progress=False)
    assert _init(pt, _weight_dq(pt).input[1]).shape == ()

    u8 = quantize_onnx(f32, calib, tmp_path / "u8.onnx", activation_type="uint8", progress=False)
    q_in = next(n for n in onnx.load(u8).graph.node if n.op_type == "QuantizeLinear")
    assert _init(u8, q_in.input[2]).dtype == np.uint8

    raw = quantize_onnx(f32, calib, tmp_path / "raw.onnx", preprocess=False, progress=False)
    assert "BatchNormalization" in _ops(raw)
    assert _init(raw, _weight_dq(raw, "BatchNormalization").input[1]).shape == (C,)  # per-channel

    ent = quantize_onnx(f32, calib, tmp_path / "ent.onnx", calibrate_method="entropy",
                        nodes_to_exclude=["fc"], progress=False)
    assert "Gemm" in _ops(ent) and _weight_dq(ent, "Conv") is not None
    fc = next(n for n in onnx.load(ent).graph.node if n.op_type == "Gemm")
    assert fc.input[1] == "fc_w"  # excluded: float weight


def test_npz_and_fixed_batch(tmp_path):
    f32 = _float_model(tmp_path / "b1.onnx", batch=1)
    npz = tmp_path / "calib.npz"
    np.savez(npz, labels=np.arange(5), **_calib(5))  # arrays that are not inputs are ignored
    out = quantize_onnx(f32, npz, tmp_path / "b1_int8.onnx", batch_size=4, progress=False)
    assert "QuantizeLinear" in _ops(out)


@pytest.mark.parametrize("calib, err, text", [
    ({"input": np.zeros((4, 1, 6, 6), np.float32)}, InputError,
     "model input(s) ['x'] (arrays: ['input']"),
    ({"x": np.zeros((4, 1, 8, 8), np.float32)}, ShapeError, "(N, 1, 6, 6)"),
    ({"x": np.zeros((1, 6, 6), np.float32)}, ShapeError, "(1, 6, 6)"),
    ({"x": np.zeros((0, 1, 6, 6), np.float32)}, InputError, "no samples"),
    ({"x": np.zeros((4, 1, 6, 6), np.int64)}, DtypeError, "int64"),
    ({"x": np.full((4, 1, 6, 6), np.nan, np.float32)}, InputError, "NaN"),
])
def test_bad_calibration(f32, tmp_path, calib, err, text):
    with pytest.raises(err) as e:
        quantize_onnx(f32, calib, tmp_path / "out.onnx", progress=False)
    assert text in str(e.value) and isinstance(e.value, SynapseError)
    assert not (tmp_path / "out.onnx").exists()


def test_float64_calibration_is_cast(f32, tmp_path):
    out = quantize_onnx(f32, {"x": _calib()["x"].astype(np.float64)}, tmp_path / "o.onnx",
                        progress=False)
    assert "QuantizeLinear" in _ops(out)


def test_bad_files_and_options(f32, tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read ONNX model"):
        quantize_onnx(tmp_path / "absent.onnx", _calib(), tmp_path / "o.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFormatError):
        quantize_onnx(tmp_path / "junk.onnx", _calib(), tmp_path / "o.onnx")
    with pytest.raises(InputError, match="cannot read calibration file"):
        quantize_onnx(f32, tmp_path / "absent.npz", tmp_path / "o.onnx")
    with pytest.raises(ValueError, match="fmt must be one of"):
        quantize_onnx(f32, _calib(), tmp_path / "o.onnx", fmt="int4")
    with pytest.raises(ValueError, match="weight_type"):
        quantize_onnx(f32, _calib(), tmp_path / "o.onnx", weight_type="int16")
    with pytest.raises(TypeError, match="unknown keyword"):
        quantize_onnx(f32, _calib(), tmp_path / "o.onnx", per_chanel=False)


def test_cli_arguments(f32, tmp_path, capsys):
    npz = tmp_path / "calib.npz"
    np.savez(npz, **_calib())
    p = argparse.ArgumentParser()
    add_quantize_arguments(p)
    args = p.parse_args([f32, "--calibration", str(npz), "-o", str(tmp_path / "m.syn"),
                         "--no-per-channel", "--format", "qoperator", "-q"])
    assert args.per_channel is False and args.quant_format == "qoperator"
    path = run_quantize(args)
    assert path == str(tmp_path / "m.int8.onnx") and "QLinearConv" in _ops(path)
    assert "wrote" in capsys.readouterr().out

    args = p.parse_args([f32, "-c", str(npz), "-o", str(tmp_path / "m.onnx"), "-q"])
    assert run_quantize(args) == str(tmp_path / "m.onnx")


def test_two_inputs_need_equal_sample_counts(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    path = tmp_path / "add.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    with pytest.raises(ShapeError, match="different sample counts"):
        quantize_onnx(path, {"a": a, "b": b}, tmp_path / "o.onnx", progress=False)
    out = quantize_onnx(path, {"a": a, "b": b[:1].repeat(8, 0)}, tmp_path / "o.onnx", progress=False)
    assert "QuantizeLinear" in _ops(out)
