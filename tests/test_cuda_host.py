"""The CUDA kernels' integer code, compiled for the host, against the numpy reference.

cuda_kernels/*.cu are compiled with g++ through host_compat.h (tests/cuda_host):
the same source, with the host side of every `#ifdef __CUDA_ARCH__` (syn_bit_length's
__builtin_clzll instead of __clzll) and a 1x1 grid, runs here on the CPU, bit for
bit. Single-op graphs and whole models go through the CUDA backend's executable
(lowering, argument packing, slots, launch order) on a host device. The device
branches and the real launch geometry are tested by test_cuda_gpu.py (on the
emulated device without a GPU). Needs g++, not a GPU.
"""
import ctypes
import shutil

import numpy as np
import pytest

from synapse_gpu.backends.cuda import CudaExecutable
from synapse_gpu.reference import requant as R

from cuda_host import cases
from cuda_host.hostlib import HostDevice, library

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")

I64 = np.int64


@pytest.fixture(scope="session")
def lib():
    return library()


def _p(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))


def host_requant(lib, acc, m, k, zp, qmin, qmax, fn="syn_requant_vec"):
    acc, m, k, zp, qmin, qmax = (np.ascontiguousarray(np.broadcast_to(v, np.shape(acc)), I64)
                                 for v in (acc, m, k, zp, qmin, qmax))
    out = np.empty(acc.shape, np.int8)
    getattr(lib, fn)(_p(acc), _p(m), _p(k), _p(zp), _p(qmin), _p(qmax), acc.size, out.ctypes.data)
    return out


def host_unary(lib, name, *arrays):
    arrays = [np.ascontiguousarray(a, I64) for a in arrays]
    out = np.empty(arrays[0].shape, I64)
    getattr(lib, name)(*[_p(a) for a in arrays], arrays[0].size, _p(out))
    return out


# ------------------------------------------------------------------ requantization helpers

def _log_uniform_ints(rng, n, max_bits):
    """Signed integers spread over every magnitude from 0 to 2^max_bits."""
    bits = rng.integers(0, max_bits + 1, n)
    mag = rng.integers(0, 1 << 62, n, dtype=I64) >> (62 - bits)
    return np.where(rng.random(n) < 0.5, -mag, mag)


def _edges():
    p = np.array([1 << b for b in range(62)], I64)
    v = np.concatenate([[0, 1, 2, 3], p, p - 1, p + 1, [-(1 << 31), (1 << 31) - 1]])
    return np.concatenate([v, -v])


def test_bit_length(lib):
    rng = np.random.default_rng(1)
    v = np.abs(np.concatenate([_edges(), _log_uniform_ints(rng, 200_000, 61)]))
    np.testing.assert_array_equal(host_unary(lib, "syn_bit_length_vec", v), R.bit_length(v))


def test_round_shift(lib):
    rng = np.random.default_rng(2)
    v = np.concatenate([np.repeat(_edges(), 4), _log_uniform_ints(rng, 400_000, 60)])
    s = rng.integers(0, 80, v.size)
    # exact ties: odd and even quotients plus exactly one half
    q = rng.integers(-(1 << 20), 1 << 20, 50_000)
    t = rng.integers(1, 30, q.size)
    tie_v, tie_s = (q << t) + (np.int64(1) << (t - 1)), t
    v, s = np.concatenate([v, tie_v]), np.concatenate([s, tie_s])
    np.testing.assert_array_equal(host_unary(lib, "syn_round_shift_vec", v, s), R.round_shift(v, s))


def test_round_to_24_bits(lib):
    rng = np.random.default_rng(3)
    q = rng.integers(1 << 23, 1 << 24, 100_000)  # ties at every magnitude above 2^24
    t = rng.integers(1, 36, q.size)
    ties = ((q << t) + (np.int64(1) << (t - 1))) * rng.choice([-1, 1], q.size)
    v = np.concatenate([_edges(), _log_uniform_ints(rng, 500_000, 60), ties])
    got = host_unary(lib, "syn_round_to_24_bits_vec", v)
    np.testing.assert_array_equal(got, R.round_to_24_bits(v))
    small = np.abs(v) < (1 << 53)  # and it is what float32 rounding does
    np.testing.assert_array_equal(got[small], v[small].astype(np.float32).astype(I64))


def test_scale_by_pow2(lib):
    rng = np.random.default_rng(4)
    p = np.concatenate([np.repeat(_edges()[np.abs(_edges()) < (1 << 56)], 8),
                        _log_uniform_ints(rng, 400_000, 55)])
    k = rng.integers(-80, 90, p.size)
    np.testing.assert_array_equal(host_unary(lib, "syn_scale_by_pow2_vec", p, k),
                                  R.scale_by_pow2(p, k))


def _random_multipliers(rng, n):
    """float32 M over the whole range: ordinary, tiny, subnormal, huge, powers of two, 0."""
    kinds = rng.integers(0, 5, n)
    M = np.select(
        [kinds == 0, kinds == 1, kinds == 2, kinds == 3],
        [rng.uniform(1e-5, 1.0, n),
         np.exp2(rng.uniform(-150, 64, n)),  # includes subnormal float32 and k <= 0
         np.exp2(rng.integers(-40, 30, n).astype(float)),
         rng.uniform(1.0, 300.0, n)],
        0.0).astype(np.float32)
    return M


def test_requant_random(lib):
    rng = np.random.default_rng(5)
    n = 2_000_000
    acc = np.where(rng.random(n) < 0.5, rng.integers(-(1 << 31), 1 << 31, n),
                   _log_uniform_ints(rng, n, 31).clip(-(1 << 31), (1 << 31) - 1))
    acc[:8] = [0, -(1 << 31), (1 << 31) - 1, 1, -1, 1 << 24, (1 << 24) + 1, -(1 << 25) - 3]
    M = _random_multipliers(rng, n)
    m, k = R.quantize_multiplier(M)
    zp = rng.integers(-128, 128, n)
    zp[rng.random(n) < 0.2] = -128
    zp[rng.random(n) < 0.2] = 127
    lo = rng.integers(-128, 128, n)
    hi = np.maximum(lo, rng.integers(-128, 128, n))
    wide = rng.random(n) < 0.5
    lo[wide], hi[wide] = -128, 127
    got = host_requant(lib, acc, m, k, zp, lo, hi)
    np.testing.assert_array_equal(got, R.requant(acc, m, k, zp, lo, hi))
    # The rule is MLAS's float32 arithmetic, for every float32 M (numpy keeps subnormals).
    with np.errstate(over="ignore"):
        f = np.rint(acc.astype(np.float32) * M).astype(np.float64) + zp
    np.testing.assert_array_equal(got, np.clip(f, lo, hi).astype(np.int8))


def test_requant_exact_ties(lib):
    """acc * M exactly halfway between two integers: rounds to the even one."""
    rng = np.random.default_rng(6)
    j = rng.integers(1, 20, 100_000)  # M = 2^-j, acc = (2q + 1) 2^(j-1)
    q = rng.integers(-100, 100, j.size)
    acc = (2 * q + 1) << (j - 1)  # acc * M = q + 1/2
    M = np.exp2(-j.astype(float)).astype(np.float32)
    m, k = R.quantize_multiplier(M)
    got = host_requant(lib, acc, m, k, 0, -128, 127)
    np.testing.assert_array_equal(got, R.requant(acc, m, k, 0))
    np.testing.assert_array_equal(got, np.clip(q + (q & 1), -128, 127))


def test_round_shift_zp(lib):
    """z joins before the rounding: ties go to the even output code."""
    from synapse_gpu.reference.requant import round_shift_zp

    rng = np.random.default_rng(7)
    v = np.concatenate([np.repeat(_edges(), 6), _log_uniform_ints(rng, 300_000, 62)])
    s = rng.integers(-70, 90, v.size)
    q = rng.integers(-(1 << 20), 1 << 20, 100_000)  # exact ties
    t = rng.integers(1, 40, q.size)
    v = np.concatenate([v, (q << t) + (np.int64(1) << (t - 1))])
    s = np.concatenate([s, t])
    z = rng.integers(-128, 128, v.size)
    np.testing.assert_array_equal(host_unary(lib, "syn_round_shift_zp_vec", v, s, z),
                                  round_shift_zp(v, s, z))


def test_requant_zp_inside_random(lib):
    from synapse_gpu.reference.requant import requant_zp_inside

    rng = np.random.default_rng(8)
    n = 1_000_000
    acc = _log_uniform_ints(rng, n, 31).clip(-(1 << 31), (1 << 31) - 1)
    acc[:3] = [0, -(1 << 31), (1 << 31) - 1]
    pow2 = rng.random(n) < 0.3  # power-of-two multipliers: exact ties with odd zero points
    M = np.where(pow2, np.exp2(rng.integers(-12, 2, n).astype(float)),
                 _random_multipliers(rng, n)).astype(np.float32)
    m, k = R.quantize_multiplier(M)
    zp = rng.integers(-128, 128, n)
    lo, hi = np.full(n, -128), np.full(n, 127)
    got = host_requant(lib, acc, m, k, zp, lo, hi, "syn_requant_zp_inside_vec")
    np.testing.assert_array_equal(got, requant_zp_inside(acc, m, k, zp))
    differs = got != host_requant(lib, acc, m, k, zp, lo, hi)
    assert differs.any()  # the two roundings do differ at ties with an odd zero point


@pytest.mark.parametrize("zp", [-128, 127])
@pytest.mark.parametrize("M", [0.0, 1e-45, 1e-30, 2.0**-40, 0.5, 1.0, 2.0**23, 2.0**24, 3e38])
def test_requant_edge_multipliers(lib, M, zp):
    acc = np.array([0, 1, -1, 2, -2, 255, -255, (1 << 31) - 1, -(1 << 31), 1 << 24, -(1 << 24) - 1])
    m, k = R.quantize_multiplier(np.float32(M))
    got = host_requant(lib, acc, m, k, zp, -128, 127)
    np.testing.assert_array_equal(got, R.requant(acc, m, k, zp))


# ------------------------------------------------------------------ every kernel, via the backend

def run_host(graph, feeds, trace=False, lib=None):
    trav = cases.traversal(graph)
    exe = CudaExecutable(graph, trav, dev=HostDevice(lib))
    return exe, trav, exe.run(feeds, trace=trace)


@pytest.mark.parametrize("name,zx,zy", cases.op_params())
def test_op_matches_reference(lib, name, zx, zy):
    graph, feeds = cases.op_case(name, zx, zy)
    _, trav, (out, _) = run_host(graph, feeds, lib=lib)
    want = cases.reference_run(graph, trav, feeds)
    for t in graph.outputs:
        assert out[t.name].dtype == np.int8
        np.testing.assert_array_equal(out[t.name], want[t.name])


@pytest.mark.parametrize("name", sorted(set(cases.OP_CASES) - cases.CONSTANT_BY_DESIGN))
def test_op_cases_are_not_degenerate(name):
    """Some zero points of every case give more than one output value (no all-saturated case)."""
    values = set()
    for zx, zy in cases.ZPS:
        graph, feeds = cases.op_case(name, zx, zy)
        want = cases.reference_run(graph, cases.traversal(graph), feeds)
        values |= {(zx, zy)} if len(np.unique(want[graph.outputs[0].name])) > 1 else set()
    assert values, f"{name}: every output is one constant for every zero-point pair"


def test_every_op_has_a_case():
    from synapse_gpu.opdefs import OPS

    covered = {cases.OP_CASES[n](np.random.default_rng(0), 0, 0).nodes[0].op
               for n in cases.OP_CASES}
    assert covered == set(OPS)


@pytest.mark.parametrize("model", sorted(cases.MODELS))
def test_model_matches_reference_with_trace(lib, model):
    graph, feeds = cases.model_case(model)
    _, trav, (out, steps) = run_host(graph, feeds, trace=True, lib=lib)
    want = cases.reference_run(graph, trav, feeds)
    for t in graph.outputs:
        np.testing.assert_array_equal(out[t.name], want[t.name])
    assert [(s[0], s[1]) for s in steps] == [(n.name, n.outputs[0]) for n in trav.order]
    for node, tensor, y in steps:
        np.testing.assert_array_equal(y, want[tensor], err_msg=f"node {node}")


@pytest.mark.parametrize("model", sorted(cases.MODELS))
def test_model_batch_sizes_share_one_executable(lib, model):
    """Re-planning for another batch size gives each sample the bits it has alone."""
    graph, feeds = cases.model_case(model, batch=5)
    exe = CudaExecutable(graph, cases.traversal(graph), dev=HostDevice(lib))
    full, _ = exe.run(feeds)
    for i in (0, 3):
        one, _ = exe.run({k: v[i:i + 1] for k, v in feeds.items()})
        for t in graph.outputs:
            np.testing.assert_array_equal(one[t.name], full[t.name][i:i + 1])
    again, _ = exe.run(feeds)
    for t in graph.outputs:
        np.testing.assert_array_equal(again[t.name], full[t.name])


def test_parameters_upload_once_and_shared_buffers_dedupe(lib):
    from synapse_gpu import build
    from synapse_gpu.graph import GraphBuilder

    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 4, 5, 5), 0.05, 0)
    w = cases.i8(rng, (4, 4, 3, 3))
    h = build.conv(b, x, w, 0.01, None, y_scale=0.05, y_zero_point=0, pads=[1, 1, 1, 1])
    h = build.conv(b, h, w, 0.01, None, y_scale=0.05, y_zero_point=0, pads=[1, 1, 1, 1])
    b.add_output(h, "y")
    graph = b.build()
    n0, n1 = graph.nodes[:2]
    assert n0.params == n1.params  # identical arrays share buffer ids
    dev = HostDevice(lib)
    uploads = []
    upload = dev.upload
    dev.upload = lambda a: uploads.append(a.shape) or upload(a)
    exe = CudaExecutable(graph, cases.traversal(graph), dev=dev)
    n_params = len(exe._params)
    assert n_params == len(set(n0.params.values()))  # zero bias and zero points share one too
    exe.run(cases.feeds_for(graph, rng, 2))
    exe.run(cases.feeds_for(graph, rng, 2))
    assert len(exe._params) == n_params
    assert len([s for s in uploads if s == (4, 4, 3, 3)]) == 1
