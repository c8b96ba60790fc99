"""The public API: onnxruntime-like session, feeds checking, digests, determinism."""
import warnings

import numpy as np
import pytest

import synapse_gpu as sg
from synapse_gpu import backends, errors
from synapse_gpu.digest import tensor_digest
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.modelfile import save_model
from synapse_gpu.reference.boundary import dequantize, quantize


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "tiny.syn"
    save_model(tiny_cnn(seed=7), p)
    return p


@pytest.fixture(scope="module")
def sess(model_path):
    return sg.InferenceSession(model_path, device="cpu")


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)


def test_describes_inputs_and_outputs(sess):
    (i,), (o,) = sess.get_inputs(), sess.get_outputs()
    assert (i.name, i.shape, i.type) == ("input", ["N", 1, 8, 8], "tensor(float)")
    assert (o.name, o.shape) == ("logits", ["N", 10])
    assert sess.get_modelmeta().custom_metadata_map["model_id"] == sess.model_id


def test_float_and_int8_paths_agree(sess):
    x = _images(4)
    f, = sess.run(None, {"input": x})
    q, = sess.run(["logits"], {"input": x}, output_type="int8")
    assert f.dtype == np.float32 and q.dtype == np.int8
    t = sess.graph.outputs[0]
    np.testing.assert_array_equal(f, dequantize(q, t.scale, t.zero_point))
    assert np.unique(q).size > 3  # a real, non-constant output
    xi = quantize(x, sess.graph.inputs[0].scale, sess.graph.inputs[0].zero_point)
    q2, = sess.run(None, {"input": xi}, output_type="int8")
    np.testing.assert_array_equal(q, q2)


def test_batch_invariance_32(sess):
    x = _images(32, seed=1)
    batch, = sess.run(None, {"input": x}, output_type="int8")
    for i in range(32):
        alone, = sess.run(None, {"input": x[i:i + 1]}, output_type="int8")
        np.testing.assert_array_equal(batch[i:i + 1], alone)
    # composition: the same sample among other samples
    mixed = np.concatenate([_images(5, seed=9), x[3:4], _images(2, seed=8)])
    out, = sess.run(None, {"input": mixed}, output_type="int8")
    np.testing.assert_array_equal(out[5], batch[3])


def test_run_to_run_and_digest_after_reload(sess, model_path, tmp_path):
    x = _images(6, seed=2)
    r1 = sess.run_full(None, {"input": x})
    r2 = sess.run_full(None, {"input": x})
    assert r1.digest == r2.digest
    np.testing.assert_array_equal(r1.int8_outputs["logits"], r2.int8_outputs["logits"])
    from synapse_gpu.modelfile import load_model

    copy = tmp_path / "copy.syn"
    save_model(load_model(model_path), copy)
    r3 = sg.InferenceSession(copy, device="cpu").run_full(None, {"input": x})
    assert r3.digest == r1.digest
    x2 = x.copy()
    x2[0, 0, 0, 0] = 1 - x2[0, 0, 0, 0]
    assert sess.run_full(None, {"input": x2}).digest != r1.digest


def test_trace_lists_every_node_with_digests(sess):
    x = _images(2, seed=3)
    r = sess.run_full(None, {"input": x}, trace=True)
    assert [e.node for e in r.trace] == [n.name for n in sess.report.traversal.order]
    assert r.trace[-1].tensor == "logits"
    assert r.trace[-1].digest == tensor_digest("logits", r.int8_outputs["logits"])
    assert len({e.digest for e in r.trace}) == len(r.trace)


@pytest.mark.parametrize("feed, exc, match", [
    ({"image": np.zeros((1, 1, 8, 8), np.float32)}, errors.InputError, "unknown inputs"),
    ({}, errors.InputError, "missing inputs"),
    ({"input": np.zeros((1, 1, 8, 9), np.float32)}, errors.ShapeError, "shape"),
    ({"input": np.zeros((1, 8, 8), np.float32)}, errors.ShapeError, "shape"),
    ({"input": np.zeros((0, 1, 8, 8), np.float32)}, errors.ShapeError, "shape"),
    ({"input": np.zeros((1, 1, 8, 8), np.int32)}, errors.DtypeError, "int32"),
    ({"input": np.zeros((1, 1, 8, 8), np.uint8)}, errors.DtypeError, "uint8"),
    ({"input": np.full((1, 1, 8, 8), np.nan, np.float32)}, errors.InputError, "NaN"),
])
def test_bad_feeds(sess, feed, exc, match):
    with pytest.raises(exc, match=match):
        sess.run(None, feed)


def test_bad_output_requests(sess):
    with pytest.raises(errors.InputError, match="unknown outputs"):
        sess.run(["nope"], {"input": _images(1)})
    with pytest.raises(errors.InputError, match="output_type"):
        sess.run(None, {"input": _images(1)}, output_type="int16")


def test_infinities_saturate(sess):
    x = _images(2, seed=4)
    x[0, 0, 0, :4] = [np.inf, -np.inf, 1e30, -1e30]
    q = quantize(x, sess.graph.inputs[0].scale, sess.graph.inputs[0].zero_point)
    assert q[0, 0, 0, :4].tolist() == [127, -128, 127, -128]
    a, = sess.run(None, {"input": x}, output_type="int8")
    b, = sess.run(None, {"input": q}, output_type="int8")
    np.testing.assert_array_equal(a, b)


def test_devices(model_path, monkeypatch):
    ok, reason = backends.cuda_status()
    if not ok:
        with pytest.raises(errors.DeviceError, match="CUDA is not usable"):
            sg.InferenceSession(model_path, device="cuda")
        monkeypatch.setattr(backends, "_notified", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = sg.InferenceSession(model_path, device="auto")
            sg.InferenceSession(model_path, device="auto")
        assert s.device == "cpu"
        assert len([w for w in caught if "running on the CPU" in str(w.message)]) == 1
    with pytest.raises(errors.DeviceError, match="unknown device"):
        sg.InferenceSession(model_path, device="tpu")


def test_cpu_path_never_imports_cupy(model_path):
    import subprocess
    import sys

    code = ("import sys, numpy as np, synapse_gpu as sg; "
            f"s = sg.InferenceSession({str(model_path)!r}, device='cpu'); "
            "s.run(None, {'input': np.zeros((1, 1, 8, 8), np.float32)}); "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _spec_digest(sess, r):
    """The run digest from docs/SPEC.md's byte layout, written out independently."""
    import hashlib

    h = hashlib.sha256(b"synapse-run-v1\0" + bytes.fromhex(sess.model_id))
    for name, a in [(t.name, r.int8_inputs[t.name]) for t in sess.graph.inputs] + \
            [(t.name, r.int8_outputs[t.name]) for t in sess.graph.outputs]:
        h.update(name.encode() + b"\0" + np.array([a.ndim, *a.shape], "<i8").tobytes()
                 + np.ascontiguousarray(a, np.int8).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def digits():
    """The shipped digits MLP: on an onnxruntime engine, one fused graph (the lean path)."""
    import os

    ex = os.path.join(os.path.dirname(sg.__file__), "examples")
    with np.load(os.path.join(ex, "digits_test.npz")) as z:
        x = z["images"][:40].astype(np.float32)
    return sg.InferenceSession(os.path.join(ex, "digits_int8.onnx"), device="cpu"), x


def _hostile(x, seed):
    """x with +-inf, huge values and exact half-way points of the input's scale."""
    x = x.copy()
    flat = x.reshape(len(x), -1)
    rng = np.random.default_rng(seed)
    flat[0, :4] = [np.inf, -np.inf, 3e38, -3e38]
    flat[-1, -2:] = [-np.inf, np.inf]
    idx = rng.integers(0, flat.shape[1], 12)
    flat[1:13, idx] = (rng.integers(-130, 130, 12) + 0.5).astype(np.float32)
    return x


@pytest.mark.parametrize("which", ["tiny", "digits"])
def test_one_call_and_chunked_runs_agree_bit_for_bit(which, sess, digits, monkeypatch):
    """A batch that fits one backend call against the same batch cut into chunks of 7
    (RUN_BYTES lowered): identical int8 inputs, outputs, float outputs, digests, trace."""
    from synapse_gpu import session as session_mod

    s, x = (sess, _images(40, seed=11) * 4 - 2) if which == "tiny" else digits
    x = _hostile(x * np.float32(1.3), seed=12)
    (name,), t_in, t_out = list(s._in_names), s.graph.inputs[0], s.graph.outputs[0]
    whole = s.run_full(None, {name: x}, trace=True)
    assert s._chunk() >= 40
    monkeypatch.setattr(session_mod, "RUN_BYTES", 7 * s._sample_bytes)
    assert s._chunk() == 7
    cut = s.run_full(None, {name: x}, trace=True)
    for r in (whole, cut):
        np.testing.assert_array_equal(r.int8_inputs[name], quantize(x, t_in.scale, t_in.zero_point))
        np.testing.assert_array_equal(r.outputs[0], dequantize(r.int8_outputs[t_out.name],
                                                               t_out.scale, t_out.zero_point))
        assert r.digest == _spec_digest(s, r)
    np.testing.assert_array_equal(cut.int8_outputs[t_out.name], whole.int8_outputs[t_out.name])
    assert cut.outputs[0].view(np.uint32).tolist() == whole.outputs[0].view(np.uint32).tolist()
    assert cut.digest == whole.digest
    assert [e.digest for e in cut.trace] == [e.digest for e in whole.trace]
    assert np.unique(whole.int8_outputs[t_out.name]).size > 3


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("chunk", [None, 7])
def test_nan_refused_and_infinities_accepted_in_every_mix(sess, dtype, chunk, monkeypatch):
    """NaN anywhere (alone, beside +inf and -inf, only in the last chunk) is refused;
    +inf and -inf together (whose sum is NaN) without NaN are quantized as the reference."""
    from synapse_gpu import session as session_mod

    if chunk:
        monkeypatch.setattr(session_mod, "RUN_BYTES", chunk * sess._sample_bytes)
    t = sess.graph.inputs[0]
    x = (_images(20, seed=13) * 8 - 4).astype(dtype)
    x[0, 0, 0, :2] = [np.inf, -np.inf]
    x[19, 0, 7, 6:] = [-np.inf, np.inf]
    q, = sess.run(None, {"input": x}, output_type="int8")
    np.testing.assert_array_equal(sess.last_result.int8_inputs["input"],
                                  quantize(x, t.scale, t.zero_point))
    np.testing.assert_array_equal(q, sess.run(None, {"input": quantize(x, t.scale, t.zero_point)},
                                              output_type="int8")[0])
    for where in [(0, 0, 0, 2), (19, 0, 7, 7), (19, 0, 7, 5), (10, 0, 3, 3)]:
        bad = x.copy()
        bad[where] = np.nan
        with pytest.raises(errors.InputError, match="contains NaN"):
            sess.run(None, {"input": bad})


def test_run_traced_and_quantize_feeds_are_what_run_full_digests(sess):
    x = _images(3, seed=14)
    r = sess.run_full(None, {"input": x}, trace=True)
    q = sess.quantize_feeds({"input": x})
    np.testing.assert_array_equal(q["input"], r.int8_inputs["input"])
    feeds, outs, steps = sess.run_traced({"input": x})
    np.testing.assert_array_equal(feeds["input"], q["input"])
    np.testing.assert_array_equal(outs["logits"], r.int8_outputs["logits"])
    assert [(n, tensor_digest(t, y)) for n, t, y in steps] == [(e.node, e.digest) for e in r.trace]
    with pytest.raises(errors.InputError, match="missing inputs"):
        sess.quantize_feeds({})
