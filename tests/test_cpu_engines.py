"""backends/cpu_engines.py: each GEMM engine is admitted per machine by its self-test, a
saturating or mis-rounding engine is rejected, the float32 path takes over when no
integer engine is admitted, and whole models give the same bits whichever engine runs."""
import os
import platform

import numpy as np
import pytest

import synapse_gpu as sg
from synapse_gpu import build
from synapse_gpu.backends import cpu, cpu_engines, cpu_ort
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.graph import GraphBuilder
from synapse_gpu.reference.requant import requant
from synapse_gpu.validate import validate

U8S8, U8U8 = sorted(cpu_engines.ENGINES, key=lambda e: e.name)
EXAMPLES = os.path.join(os.path.dirname(sg.__file__), "examples")


def saturating_pairs(x, W, xz, wz):
    """What AVX2's u8 x s8 kernel (vpmaddubsw) computes: products of uint8 x + 128 and
    int8 w summed in pairs into int16 with saturation, then the zero-point terms."""
    a = x.astype(np.int64) + 128
    b = W.astype(np.int64)
    if a.shape[1] % 2:
        a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * b[None, 0::2] + a[:, 1::2, None] * b[None, 1::2]
    raw = np.clip(pairs, -32768, 32767).sum(axis=1)
    K = x.shape[1]
    # sum (a - az)(b - wz) = sum ab - wz sum a - az sum b + K az wz
    az = xz + 128
    return raw - wz * a.sum(1)[:, None] - az * b.sum(0)[None] + K * az * wz


class Double(cpu_engines.OrtEngine):
    """A test double: u8u8's convs, and dense layers from `dense_fn(x, params)`."""

    def __init__(self, name, dense_fn):
        super().__init__(name, np.uint8)
        self.dense_fn = dense_fn

    def dense(self, M32, fused=True, **p):
        return lambda x: self.dense_fn(np.asarray(x), M32, fused, p)


def _acc(x, p):
    W = np.asarray(p["w"]).T if p["trans_w"] else np.asarray(p["w"])
    wz = np.asarray(p["w_zero_point"]).reshape(-1)[0]
    return x, W, int(p["x_zero_point"]), int(wz), np.asarray(p["bias"], np.int64)


def clamping_dense(x, M32, fused, p):
    x, W, xz, wz, bias = _acc(x, p)
    acc = saturating_pairs(x, W, xz, wz) + bias
    return acc if not fused else requant(acc, p["multiplier"], p["shift"], p["y_zero_point"],
                                         p["qmin"], p["qmax"])


def half_up_dense(x, M32, fused, p):
    """Exact accumulators, but the requantization rounds ties up instead of to even."""
    x, W, xz, wz, bias = _acc(x, p)
    acc = (x.astype(np.int64) - xz) @ (W.astype(np.int64) - wz) + bias
    if not fused:
        return acc
    t = acc.astype(np.float32) * M32
    return np.clip(np.floor(t + np.float32(0.5)) + p["y_zero_point"], p["qmin"], p["qmax"]).astype(np.int8)


def test_saturating_double_is_rejected():
    ok, detail = cpu_engines.self_test(Double("clamping", clamping_dense), 4096)
    assert not ok and "dense accumulators differ" in detail


def test_mis_rounding_double_is_rejected():
    ok, detail = cpu_engines.self_test(Double("half-up", half_up_dense), 4096)
    assert not ok and "requantization differs" in detail


def test_exact_double_is_admitted():
    """The doubles' harness itself is right: with exact accumulators and the rule's
    rounding, the double passes, so the rejections above are the clamping and rounding."""
    def exact(x, M32, fused, p):
        x, W, xz, wz, bias = _acc(x, p)
        acc = (x.astype(np.int64) - xz) @ (W.astype(np.int64) - wz) + bias
        return acc if not fused else requant(acc, p["multiplier"], p["shift"], p["y_zero_point"],
                                             p["qmin"], p["qmax"])
    assert cpu_engines.self_test(Double("exact", exact), 4096)[0]


def test_saturating_engine_is_skipped_for_the_next(monkeypatch):
    monkeypatch.setattr(cpu_engines, "ENGINES", [Double("clamping", clamping_dense), U8U8])
    monkeypatch.setattr(cpu_engines, "_results", {})
    engine, lines = cpu_engines.choose(100)
    assert lines[0].startswith("clamping: rejected")
    assert engine is U8U8 or (engine is None and lines[-1].startswith(cpu_engines.FLOAT))


def probe_exact(engine):
    """One direct probe of the engine's MatMulInteger: all operands at the code extremes."""
    x = np.full((2, 64), 127, np.int8)
    W = np.full((64, 3), -128, np.int8)
    layer = engine.dense(None, fused=False, w=W, bias=np.zeros(3, np.int32), w_zero_point=np.zeros(3),
                         x_zero_point=-128, y_zero_point=0, trans_w=False, multiplier=None, shift=None)
    return np.array_equal(layer(x), np.full((2, 3), 64 * 255 * -128))


@pytest.mark.parametrize("engine", cpu_engines.ENGINES, ids=lambda e: e.name)
def test_self_test_agrees_with_a_direct_probe(engine):
    """On AVX2 without VNNI, u8s8 fails the probe (pair sums saturate) and must be
    rejected; where the probe passes, the self-test decides on its full case list."""
    ok, detail = cpu_engines.admitted(engine, 4096)  # the cached self-test the backend uses
    if not probe_exact(engine):
        assert not ok, detail


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 expectation")
def test_u8u8_admitted_on_x86():
    assert cpu_engines.admitted(U8U8, 4000) == (True, "exact on all self-test cases "
                                                      "(reductions up to 4096)")


def test_forced_float_path(monkeypatch):
    g = tiny_cnn(seed=3)
    rep = validate(g)
    monkeypatch.setattr(cpu_engines, "ENGINES", [Double("clamping", clamping_dense)])
    monkeypatch.setattr(cpu_engines, "_results", {})
    exe = cpu.prepare(g, rep.traversal)
    assert exe.engine == cpu_engines.FLOAT
    assert set(exe.paths.values()) == {cpu_engines.FLOAT}
    assert exe.engine_report[0].startswith("clamping: rejected")


def test_env_forces_float_path(monkeypatch):
    monkeypatch.setenv(cpu_engines.ENV, cpu_engines.FLOAT)
    g = tiny_cnn(seed=3)
    assert cpu.prepare(g, validate(g).traversal).engine == cpu_engines.FLOAT
    monkeypatch.setenv(cpu_engines.ENV, "no-such-engine")
    with pytest.raises(ValueError, match="no-such-engine"):
        cpu_engines.candidates()


def mixed_net(seed=5):
    """Layers of every kind the engine meets: conv1d, strided/dilated/grouped conv2d with
    asymmetric pads and extreme zero points, a fused ReLU, a dense with differing
    per-column weight zero points (MatMulInteger's per-column form) and one with a
    conv layer whose per-channel zero points differ (stays on the float path)."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.integers(-128, 128, shape).astype(np.int8)

    def s(n):
        return rng.uniform(0.001, 0.01, n).astype(np.float32)

    b = GraphBuilder()
    x = b.add_input("x", (-1, 6, 40), scale=0.02, zero_point=127)
    h = build.conv(b, x, w(8, 6, 5), s(8), rng.integers(-5000, 5000, 8).astype(np.int32),
                   y_scale=0.3, y_zero_point=-128, strides=[2], pads=[2, 1], name="c1d")
    h = build.reshape(b, h, [8, 4, 5], name="to2d")
    h = build.conv(b, h, w(16, 4, 3, 3), s(16), None, y_scale=0.2, y_zero_point=7, pads=[2, 1, 0, 2],
                   dilations=[2, 1], group=2, relu=True, name="grouped")
    h = build.conv(b, h, w(12, 16, 1, 1), s(12), None, y_scale=0.2, y_zero_point=-3,
                   w_zero_point=rng.integers(-5, 5, 12), name="zp_per_channel")
    h = build.flatten(b, h, name="flat")
    K = int(np.prod(b.shapes[h][1:]))
    h = build.dense(b, h, w(10, K), s(10), rng.integers(-900, 900, 10).astype(np.int32),
                    y_scale=0.5, y_zero_point=-100, w_zero_point=rng.integers(-3, 3, 10), name="fc")
    b.add_output(h, "y")
    return b.build({"name": "mixed"})


def _runs(g, x, monkeypatch):
    """int8 outputs: each engine forced first (a rejected one falls through to the next),
    the float path forced, and the plain reference ops."""
    from synapse_gpu import registry

    rep = validate(g, strict=False)
    outs = {}
    for name in [e.name for e in cpu_engines.ENGINES] + [cpu_engines.FLOAT]:
        monkeypatch.setenv(cpu_engines.ENV, name)
        exe = cpu.prepare(g, rep.traversal)
        outs[exe.engine] = exe.run({g.inputs[0].name: x})[0][g.outputs[0].name]
    env = {g.inputs[0].name: x}
    for n in rep.traversal.order:
        env[n.outputs[0]] = registry.call(registry.reference_op(n.op), n, [env[t] for t in n.inputs],
                                          g.buffers)
    outs["reference"] = env[g.outputs[0].name]
    return outs


@pytest.mark.parametrize("make", [tiny_cnn, mixed_net], ids=["tiny_cnn", "mixed_net"])
def test_whole_model_same_bits_across_engines(make, monkeypatch):
    g = make()
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (3,) + tuple(g.inputs[0].shape[1:])).astype(np.int8)
    outs = _runs(g, x, monkeypatch)
    assert set(outs) >= {cpu_engines.FLOAT, "reference"}
    ref = outs.pop("reference")
    assert len(np.unique(ref)) > 3  # a real signal, not a saturated constant
    for name, y in outs.items():
        np.testing.assert_array_equal(y, ref, err_msg=name)


def test_digits_same_bits_across_engines(monkeypatch):
    from synapse_gpu.session import load_any

    g = load_any(os.path.join(EXAMPLES, "digits_int8.onnx"))
    with np.load(os.path.join(EXAMPLES, "digits_test.npz")) as z:
        x = z["images"][:64]
    spec = g.inputs[0]
    q = np.clip(np.rint(x.reshape((len(x),) + tuple(spec.shape[1:])) / np.float32(spec.scale))
                + spec.zero_point, -128, 127).astype(np.int8)
    outs = _runs(g, q, monkeypatch)
    ref = outs.pop("reference")
    for name, y in outs.items():
        np.testing.assert_array_equal(y, ref, err_msg=name)


def test_layers_report_their_path(monkeypatch):
    monkeypatch.delenv(cpu_engines.ENV, raising=False)
    g = mixed_net()
    exe = cpu.prepare(g, validate(g, strict=False).traversal)
    if exe.engine != cpu_engines.FLOAT:
        assert exe.paths["zp_per_channel"] == cpu_engines.FLOAT  # ConvInteger takes one zero point
        assert exe.paths["c1d"] == exe.paths["fc"] == exe.engine


def test_verbose_names_the_engine(capsys):
    sg.InferenceSession(tiny_cnn(seed=1), device="cpu", verbose=True)
    out = capsys.readouterr().out
    assert "synapse: cpu engine" in out and "conv/dense layers on" in out


def test_to_u8_is_the_shift():
    x = np.arange(-128, 128, dtype=np.int16).astype(np.int8)
    np.testing.assert_array_equal(cpu_ort.to_u8(x).astype(np.int16), x.astype(np.int16) + 128)


def test_conv_cases_catch_a_saturating_conv():
    """u8s8 convs with exact dense layers: where u8s8 saturates (x86 without VNNI), the
    conv cases alone must reject it; where it is exact, they admit it."""
    def exact(x, M32, fused, p):
        x, W, xz, wz, bias = _acc(x, p)
        acc = (x.astype(np.int64) - xz) @ (W.astype(np.int64) - wz) + bias
        return acc if not fused else requant(acc, p["multiplier"], p["shift"], p["y_zero_point"],
                                             p["qmin"], p["qmax"])
    double = Double("u8s8-convs", exact)
    double.weight_dtype = np.int8
    ok, detail = cpu_engines.self_test(double, 4096)
    if probe_exact(U8S8):
        assert ok, detail
    else:
        assert not ok and "conv differs" in detail


def test_inspect_names_the_engine(capsys):
    from synapse_gpu.cli import main

    assert main(["inspect", os.path.join(EXAMPLES, "digits_int8.onnx")]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("cpu engine: ")]
    assert len(line) == 1 and "admitted" in line[0]


def test_narrow_engine_is_admitted_exactly_up_to_its_limit():
    """u8s8 with weights in [-64, 64] cannot saturate; the same self-test with the limit at
    65 must reject u8s8 wherever its pair sums saturate (the cases reach the limit)."""
    ok, detail = cpu_engines.admitted(cpu_engines.NARROW, 4096)
    assert ok, detail
    wider = cpu_engines.OrtEngine("u8s8-w65", np.int8, w_limit=65)
    if not probe_exact(U8S8):
        ok, detail = cpu_engines.self_test(wider, 4096)
        assert not ok and "z_w=65" in detail


def narrow_net(seed=6):
    """Layers with weights in [-64, 64] (the per-layer u8s8 engine) next to full-range
    ones, zero points at both ends."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 24, 13, 11), scale=0.02, zero_point=-128)

    def w(lim, *shape):
        return rng.integers(-lim, lim + 1, shape).astype(np.int8)

    h = build.conv(b, x, w(64, 32, 24, 3, 3), rng.uniform(0.001, 0.01, 32).astype(np.float32),
                   rng.integers(-900, 900, 32).astype(np.int32), y_scale=1.0, y_zero_point=127,
                   pads=[1, 1, 1, 1], name="narrow3x3")
    h = build.conv(b, h, w(64, 32, 1, 3, 3), rng.uniform(0.01, 0.05, 32).astype(np.float32), None,
                   y_scale=0.2, y_zero_point=-128, pads=[1, 1, 1, 1], group=32, relu=True, name="narrow_dw")
    h = build.conv(b, h, w(128, 16, 32, 1, 1), rng.uniform(0.001, 0.01, 16).astype(np.float32), None,
                   y_scale=0.5, y_zero_point=3, name="full1x1")
    h = build.flatten(b, h, name="flat")
    h = build.dense(b, h, w(64, 10, 16 * 13 * 11), rng.uniform(0.001, 0.01, 10).astype(np.float32), None,
                    y_scale=60.0, y_zero_point=-20, w_zero_point=-64, name="narrow_fc")
    b.add_output(h, "y")
    return b.build({"name": "narrow"})


def test_narrow_layers_run_u8s8_with_the_same_bits(monkeypatch):
    monkeypatch.delenv(cpu_engines.ENV, raising=False)
    g = narrow_net()
    rep = validate(g, strict=False)
    exe = cpu.prepare(g, rep.traversal)
    if exe.engine == cpu_engines.FLOAT:
        pytest.skip("no onnxruntime engine admitted on this machine")
    narrow = cpu_engines.NARROW.name
    assert [exe.paths[n] for n in ("narrow3x3", "narrow_dw", "narrow_fc")] == [narrow] * 3
    assert exe.paths["full1x1"] == exe.engine != narrow
    x = np.random.default_rng(2).integers(-128, 128, (3, 24, 13, 11)).astype(np.int8)
    outs = _runs(g, x, monkeypatch)
    ref = outs.pop("reference")
    assert len(np.unique(ref)) > 3
    np.testing.assert_array_equal(exe.run({"x": x})[0]["y"], ref)
    for name, y in outs.items():
        np.testing.assert_array_equal(y, ref, err_msg=name)
    monkeypatch.setenv(cpu_engines.ENV, U8U8.name)  # naming another engine turns it off
    assert narrow not in cpu.prepare(g, rep.traversal).paths.values()
