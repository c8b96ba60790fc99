"""The conv/dense/matmul kernel variants (cuda_kernels/conv.cu, dense.cu: v2 implicit
GEMM with dp4a, v3 tensor cores, v5 tensor cores fed by cp.async, v4 depthwise) give
v1's bits, on the emulated device (or a real GPU: the fixture of test_cuda_gpu.py's
kind).

Every shape class the tiles can get wrong: tile edges (64 channels, 65, pixel and
k counts just past a tile), odd channel counts, groups, strides, dilations, padding
(asymmetric, larger than the kernel), 1-D/2-D/3-D, per-channel weight zero points,
zero points at both ends of int8, batches 1, 37, 65; then whole models (the
suite's models, a small ResNet with a depthwise stage, the bundled digits model)
whose outputs and digests must not depend on the forced variant. The choice
itself (forcing, the table, fallbacks) is tested without a device.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synapse_gpu import InferenceSession, build
from synapse_gpu.errors import OptionError
from synapse_gpu.backends import cpu, cuda, cuda_variants
from synapse_gpu.examples.demo import example_path
from synapse_gpu.graph import GraphBuilder

from cuda_host import cases
from synapse_devices import gpu  # noqa: F401  (autouse: a GPU, else the emulator)

pytestmark = pytest.mark.gpu

GEMM = cuda_variants.GEMM


# (C, M, group, spatial, kernel, strides, pads, dilations, per-channel w zero points)
CONV = {
    "tile_edges_odd_c": (5, 65, 1, (5, 5), (3, 3), [1, 1], [1, 1, 1, 1], [1, 1], True),
    "k64_m64_1x1": (64, 64, 1, (3, 3), (1, 1), [1, 1], [0, 0, 0, 0], [1, 1], False),
    "k33_group3_strided": (33, 6, 3, (7, 6), (1, 1), [2, 1], [1, 0, 0, 1], [1, 1], True),
    "group2_dilated_asym": (6, 10, 2, (8, 7), (3, 2), [1, 2], [0, 2, 1, 0], [2, 1], True),
    "pad_exceeds_kernel": (3, 7, 1, (3, 4), (2, 2), [1, 1], [3, 2, 2, 3], [1, 1], True),
    "conv1d_k31": (7, 9, 1, (13,), (5,), [2], [2, 1], [1], True),
    "conv3d": (3, 4, 1, (3, 4, 4), (2, 3, 3), [1, 2, 1], [0, 1, 1, 1, 0, 1], [1, 1, 2], True),
    "dw_3x3": (7, 7, 7, (9, 9), (3, 3), [1, 1], [1, 1, 1, 1], [1, 1], True),
    "dw_mult2_5x5_s2": (5, 10, 5, (9, 8), (5, 5), [2, 2], [2, 2, 2, 2], [1, 1], False),
    "dw_two_tiles": (3, 3, 3, (18, 17), (3, 3), [1, 1], [1, 1, 1, 1], [1, 1], True),
    "dw_conv1d_dil2": (4, 4, 4, (19,), (3,), [1], [2, 2], [2], True),
}
DEPTHWISE = [k for k in CONV if k.startswith("dw_")]
# (input shape, K, M, trans_w, per-channel w zero points)
DENSE = {
    "k100_m65_trans": ((-1, 100), 100, 65, True, True),
    "k31_m7_plain": ((-1, 31), 31, 7, False, True),
    "rank3_k64": ((-1, 3, 64), 64, 9, True, False),
    "k48_m70_plain": ((-1, 48), 48, 70, False, True),  # v5: x by cp.async, W by registers
}
# (a shape, b shape): rows and columns past a tile, K odd / a multiple of 16 (v5's
# cp.async rows) / past a k step, a or b broadcast over a batch axis, b fixed
MATMUL = {
    "tile_edges_k48": ((-1, 65, 48), (-1, 48, 66)),
    "odd_k37_b_fixed": ((-1, 3, 5, 37), (1, 3, 37, 9)),
    "k64_a_broadcast": ((-1, 1, 17, 64), (-1, 2, 64, 20)),
    "k32_n70_b_broadcast": ((-1, 7, 32), (1, 32, 70)),
}
# (input zero point, output zero point), batch: each case at one batch, every
# batch and both ends of the int8 zero points covered across the cases
ZP_BATCH = [((-128, 127), 37), ((127, -128), 65), ((-37, 1), 1)]


def _conv_case(name, zx, zy, batch):
    C, M, group, sp, k, strides, pads, dil, per_channel = CONV[name]
    rng = np.random.default_rng([len(name), zx + 128, zy + 128, batch])
    K = C // group * math.prod(k)
    wz = rng.integers(-5, 6, M).astype(np.int32) if per_channel else np.zeros(M, np.int32)
    mult = rng.uniform(0.5, 2, M) * 0.01 / math.sqrt(K)
    m, s = cases.qm(mult.astype(np.float32))
    graph = cases.single(f"conv{len(sp)}d", [(-1, C, *sp)], dict(
        x_zero_point=zx, y_zero_point=zy, strides=strides, pads=pads, dilations=dil,
        group=group, qmin=-128, qmax=127), dict(
        w=cases.i8(rng, (M, C // group, *k)), bias=rng.integers(-50000, 50000, M).astype(np.int32),
        multiplier=m, shift=s, w_zero_point=wz))
    return graph, cases.feeds_for(graph, rng, batch)


def _dense_case(name, zx, zy, batch):
    x_shape, K, M, trans, per_channel = DENSE[name]
    rng = np.random.default_rng([len(name), zx + 128, zy + 128, batch, 1])
    wz = rng.integers(-3, 4, M).astype(np.int32) if per_channel else np.zeros(M, np.int32)
    m, s = cases.qm((rng.uniform(0.5, 2, M) * 0.01 / math.sqrt(K)).astype(np.float32))
    graph = cases.single("dense", [x_shape], dict(
        x_zero_point=zx, y_zero_point=zy, trans_w=int(trans), qmin=-128, qmax=127), dict(
        w=cases.i8(rng, (M, K) if trans else (K, M)),
        bias=rng.integers(-9000, 9000, M).astype(np.int32), multiplier=m, shift=s, w_zero_point=wz))
    return graph, cases.feeds_for(graph, rng, batch)


def _matmul_case(name, za, zy, batch):
    """b's zero point near the middle (-za / 16): with both ends every product has one
    sign and the outputs saturate."""
    a_shape, b_shape = MATMUL[name]
    K = a_shape[-1]
    m, s = cases.sqm(1 / (math.sqrt(K) * 600))
    graph = cases.single("matmul", [a_shape, b_shape], dict(
        a_zero_point=za, b_zero_point=-za // 16, y_zero_point=zy, multiplier=m, shift=s))
    return graph, cases.feeds_for(graph, np.random.default_rng([len(name), za + 128, batch, 2]), batch)


def _check_variant(graph, feeds, variant):
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav, variant=variant)
    assert set(exe.variants.chosen.values()) == {variant}, exe.variants.chosen
    out, _ = exe.run(feeds)
    want = cases.reference_run(graph, trav, feeds)
    for t in graph.outputs:
        np.testing.assert_array_equal(out[t.name], want[t.name])
        # not a saturated, near-constant output
        assert len(np.unique(want[t.name])) > min(8, want[t.name].size // 2)


@pytest.mark.parametrize("zps,batch", ZP_BATCH)
@pytest.mark.parametrize("name", sorted(CONV))
def test_conv_variants_match_reference(name, zps, batch):
    graph, feeds = _conv_case(name, *zps, batch)
    # the depthwise cases are v4's; v5's register path (K % 16 != 0, as here) and its
    # groups run in conv1d_k31, k33_group3_strided (CI time: the emulator is slow)
    for v in ("v2", "v3", "v4") if name in DEPTHWISE else GEMM:
        _check_variant(graph, feeds, v)


@pytest.mark.parametrize("zps,batch", ZP_BATCH)
@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_variants_match_reference(name, zps, batch):
    graph, feeds = _dense_case(name, *zps, batch)
    for v in GEMM:
        _check_variant(graph, feeds, v)


@pytest.mark.parametrize("zps,batch", ZP_BATCH)
@pytest.mark.parametrize("name", sorted(MATMUL))
def test_matmul_variants_match_reference(name, zps, batch):
    graph, feeds = _matmul_case(name, *zps, batch)
    for v in GEMM:
        _check_variant(graph, feeds, v)


def test_a_wrong_zero_point_correction_is_caught(monkeypatch):
    """The comparison has teeth: corr computed for z_x + 1 changes outputs."""
    real = cuda_variants._corr
    monkeypatch.setattr(cuda_variants, "_corr", lambda P, wsum, K, zx: real(P, wsum, K, zx + 1))
    graph, feeds = _conv_case("tile_edges_odd_c", -37, 1, 1)
    for v in GEMM:
        with pytest.raises(AssertionError):
            _check_variant(graph, feeds, v)


@pytest.mark.parametrize("case", [("dense", "k48_m70_plain"), ("matmul", "k64_a_broadcast")])
def test_v5_without_its_cp_async_wait_is_caught(gpu, monkeypatch, case):
    """v5 takes the cp.async path on these shapes (K % 16 = 0: x's rows, a's rows; one
    patched dense.cu module for both, conv_v5 reads its weights as matmul_v5 reads a),
    and the emulated device
    defers the copies: with the wait dropped they never land (tests/test_emucuda.py:
    a read before the wait sees poison), which the launch reports."""
    if "emucuda" not in gpu:
        pytest.skip("a real GPU may still see the data by chance")
    from synapse_gpu.backends import cuda_device

    real = cuda_device.kernel_source
    wait = "void wait() const { syn_cp_async_wait<0>(); }"
    assert wait in real("dense")
    monkeypatch.setattr(cuda_device, "kernel_source",
                        lambda family: real(family).replace(wait, "void wait() const {}"))
    family, name = case
    graph, feeds = {"conv": _conv_case, "dense": _dense_case, "matmul": _matmul_case}[family](
        name, -37, 1, 3)
    from emucuda.device import EmulatorError

    with pytest.raises(EmulatorError, match=r"(dense|matmul)_v5: cp\.async"):
        _check_variant(graph, feeds, "v5")
    _check_variant(graph, feeds, "v3")  # the same module's other kernels are untouched


def small_resnet(seed=0):
    """Stem, a residual block, a strided block with a 1x1 projection, a depthwise
    stage, global pooling and a classifier: every conv shape class of a real net."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 3, 12, 12), 0.02, -5)

    def conv(h, C, M, k, stride=1, relu=True, group=1, wz=0):
        pad = k // 2
        return build.conv(b, h, cases.i8(rng, (M, C // group, k, k)),
                          rng.uniform(0.002, 0.006, M).astype(np.float32),
                          rng.integers(-3000, 3000, M).astype(np.int32), y_scale=0.05,
                          y_zero_point=int(rng.integers(-20, 20)), w_zero_point=wz,
                          strides=[stride] * 2, pads=[pad] * 4, group=group, relu=relu)

    def add(a, c):
        return build.add(b, a, c, y_scale=0.06, y_zero_point=3, relu=True)

    h = conv(x, 3, 16, 3, stride=2)
    h = add(conv(conv(h, 16, 16, 3), 16, 16, 3, relu=False), h)
    h = add(conv(conv(h, 16, 24, 3, stride=2), 24, 24, 3, relu=False), conv(h, 16, 24, 1, 2, False))
    h = conv(h, 24, 24, 3, group=24, wz=2)
    h = build.global_avg_pool(b, h, y_scale=0.05, y_zero_point=0)
    h = build.flatten(b, h)
    h = build.dense(b, h, cases.i8(rng, (10, 24)), rng.uniform(0.002, 0.006, 10).astype(np.float32),
                    y_scale=0.1, y_zero_point=0)
    b.add_output(h, "y")
    return b.build({"name": "small_resnet"})


FORCED = ("v1", "v2", "v3", "v4", "v5", "v6", "conv=v4,dense=v5,matmul=v3")


@pytest.mark.parametrize("model", ["small_resnet", *sorted(cases.MODELS)])
def test_models_identical_across_forced_variants(model, monkeypatch):
    """Outputs and digests of whole models at batch 37, forced through the environment."""
    graph = small_resnet() if model == "small_resnet" else cases.MODELS[model](0)
    feeds = cases.feeds_for(graph, np.random.default_rng(7), 37)
    want, _ = cpu.prepare(graph, cases.traversal(graph)).run(feeds)
    digests = set()
    for v in FORCED:
        monkeypatch.setenv(cuda_variants.ENV, v)
        sess = InferenceSession(graph, device="cuda")
        r = sess.run_full(None, feeds, output_type="int8")
        for name, a in want.items():
            np.testing.assert_array_equal(r.int8_outputs[name], a, err_msg=f"{model} {v}")
        digests.add(r.digest)
    assert len(digests) == 1


def test_session_option_forces_a_variant(monkeypatch):
    from synapse_gpu import SessionOptions

    monkeypatch.setenv(cuda_variants.ENV, "v1")  # the session option wins
    graph = small_resnet()
    so = SessionOptions()
    so.add_session_config_entry("synapse.cuda_variant", "conv=v3,dense=v2")
    sess = InferenceSession(graph, so, device="cuda")
    assert set(sess._exe.variants.chosen.values()) == {"v2", "v3"}
    feeds = cases.feeds_for(graph, np.random.default_rng(1), 1)
    want = InferenceSession(graph, device="cpu").run_full(None, feeds, output_type="int8")
    assert sess.run_full(None, feeds, output_type="int8").digest == want.digest
    bad = SessionOptions()
    bad.add_session_config_entry("synapse.cuda_variant", "matmul=v4")
    with pytest.raises(OptionError, match="matmul has variants v1, v2, v3, v5, not 'v4'"):
        InferenceSession(graph, bad, device="cuda")


def test_digits_model_identical_across_forced_variants(monkeypatch):
    images = np.load(str(example_path("digits_test.npz")))["images"][:65]
    model = str(example_path("digits.syn"))
    runs = {}
    for v in ("v1", "v2", "v3", "v4"):
        monkeypatch.setenv(cuda_variants.ENV, v)
        runs[v] = InferenceSession(model, device="cuda").run_full(None, {"images": images},
                                                                  output_type="int8")
    for v, r in runs.items():
        assert r.digest == runs["v1"].digest, v


SANITIZED = r"""
import numpy as np
import test_cuda_variants as T
from cuda_host import cases
from emucuda import cupy_standin
from synapse_gpu.backends import cuda

with cupy_standin.installed():
    for name in ("tile_edges_odd_c", "k33_group3_strided", "group2_dilated_asym",
                 "pad_exceeds_kernel", "conv3d", "dw_mult2_5x5_s2", "dw_two_tiles", "dw_conv1d_dil2"):
        graph, feeds = T._conv_case(name, -128, 127, 3)
        for v in (*T.GEMM, "v4") if name in T.DEPTHWISE else (*T.GEMM, "v6"):
            T._check_variant(graph, feeds, v)
    for name in T.DENSE:
        graph, feeds = T._dense_case(name, 127, -128, 3)
        for v in T.GEMM:
            T._check_variant(graph, feeds, v)
    for name in T.MATMUL:
        graph, feeds = T._matmul_case(name, -128, 127, 3)
        for v in T.GEMM:
            T._check_variant(graph, feeds, v)
    graph = T.small_resnet()
    feeds = cases.feeds_for(graph, np.random.default_rng(0), 2)
    for v in ("v2", "v3", "v4", "v6"):
        cuda.prepare(graph, cases.traversal(graph), variant=v).run(feeds)
print("sanitized run ok")
"""


@pytest.mark.slow
@pytest.mark.sanitizer
def test_variants_clean_under_asan_and_ubsan(tmp_path):
    """Tile edges, gathers past the input and the depthwise patch, under ASan/UBSan
    (tests/test_cuda_sanitizer.py's setup: exact-size device mallocs)."""
    p = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True) \
        if shutil.which("g++") else None
    asan = p.stdout.strip() if p else ""
    if not (os.path.isabs(asan) and os.path.exists(asan)):
        pytest.skip("no AddressSanitizer runtime for g++")
    tests = Path(__file__).resolve().parent
    env = dict(os.environ, EMUCUDA_SANITIZE="address,undefined", LD_PRELOAD=asan,
               ASAN_OPTIONS="detect_leaks=0", PYTHONPATH=str(tests),
               EMUCUDA_CACHE_DIR=str(tmp_path / "emucuda_asan"))
    p = subprocess.run([sys.executable, "-c", SANITIZED], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0 and "sanitized run ok" in p.stdout, p.stdout[-3000:] + p.stderr[-6000:]


# ------------------------------------------------------------------ the choice, no device

def _conv_node(name="tile_edges_odd_c"):
    graph, _ = _conv_case(name, 0, 0, 1)
    trav = cases.traversal(graph)
    node = trav.order[0]
    shapes = {t: cuda.concrete(s, 2) for t, s in trav.shapes.items()}
    return node, shapes, {r: graph.buffers[b] for r, b in node.params.items()}


def test_parse_force():
    assert cuda_variants.parse_force("") == {}
    assert cuda_variants.parse_force("v2") == {"conv": "v2", "dense": "v2", "matmul": "v2"}
    assert cuda_variants.parse_force("v4") == {"conv": "v4"}
    assert cuda_variants.parse_force("v6") == {"conv": "v6"}  # channels-last: conv only
    assert cuda_variants.parse_force("conv=v3, matmul=v5") == {"conv": "v3", "matmul": "v5"}
    for bad in ("v9", "dense=v4", "matmul=v4", "pool=v2"):
        with pytest.raises(OptionError, match="SYNAPSE_CUDA_VARIANT: .*(variant|family)"):
            cuda_variants.parse_force(bad)


def test_choice_fallbacks_and_table(tmp_path, monkeypatch):
    node, S, P = _conv_node()
    monkeypatch.delenv(cuda_variants.ENV, raising=False)
    key = cuda_variants.shape_key(node, S, P)
    assert "C=5:M=65" in key  # no batch size in the key:
    assert cuda_variants.shape_key(node, {t: (7, *s[1:]) for t, s in S.items()}, P) == key
    table = {"compute_capability": "90", "layers": {key: "v3"}}
    # v1 without a table; the table applies on its own compute capability only
    assert cuda_variants.Chooser(cc="90", table={})(node, S, P) is None
    for cc, kernel in (("90", "conv_v3"), ("80", None)):
        ch = cuda_variants.Chooser(cc=cc, table=table)
        steps = ch(node, S, P)
        assert (steps[0].kernel if steps else None) == kernel
    # v3 below sm_80 (or an unknown device) runs v2; v4 on a non-depthwise conv runs v1
    for v in ("v3", "v5"):
        assert cuda_variants.Chooser(v, cc="75", table={})(node, S, P)[0].kernel == "conv_v2"
    assert cuda_variants.Chooser("v5", cc="80", table={})(node, S, P)[0].kernel == "conv_v5"
    assert cuda_variants.Chooser("v4", cc="90", table={})(node, S, P) is None
    dw = _conv_node("dw_3x3")
    assert cuda_variants.Chooser("v4", cc="90", table={})(*dw)[0].kernel == "conv2d_v4"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv(cuda_variants.TABLE_ENV, str(path))
    assert cuda_variants.Chooser(cc="90")(node, S, P)[0].kernel == "conv_v3"
    monkeypatch.setenv(cuda_variants.ENV, "v2")  # forcing beats the table
    assert cuda_variants.Chooser(cc="90")(node, S, P)[0].kernel == "conv_v2"


def test_gemm_launch_geometry():
    """One 256-thread block per 64 x 64 tile of each group; corr wraps to int32."""
    node, S, P = _conv_node("k33_group3_strided")
    (launch,) = cuda_variants.Chooser("v2", table={})(node, S, P)
    pixels = math.prod(S[node.outputs[0]]) // S[node.outputs[0]][1]
    assert launch.n == 3 * 1 * -(-pixels // 64) * 256 == 3 * -(-pixels // 64) * cuda.BLOCK
    corr = launch.args[2].values
    assert len(corr) == 6 and all(-2 ** 31 <= v < 2 ** 31 for v in corr)


def test_matmul_launch_geometry_and_key():
    """One block per 64 x 64 tile of each batch matrix, matmul_v1's arguments; the
    table key has no batch size."""
    graph, _ = _matmul_case("k64_a_broadcast", 0, 0, 1)
    trav = cases.traversal(graph)
    node = trav.order[0]
    shapes = {t: cuda.concrete(s, 5) for t, s in trav.shapes.items()}
    (v1,) = cuda.lower(node, shapes, graph.buffers)
    (launch,) = cuda_variants.Chooser("v5", cc="90", table={})(node, shapes, {})
    assert launch.kernel == "matmul_v5" and launch.args == v1.args
    assert launch.n == 5 * 2 * 1 * 1 * cuda.BLOCK  # (5, 2) matrices of 17 x 20
    key = cuda_variants.shape_key(node, shapes, {})
    assert key == cuda_variants.shape_key(node, {t: (9, *s[1:]) for t, s in shapes.items()}, {})
