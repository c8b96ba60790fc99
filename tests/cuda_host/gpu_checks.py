"""The GPU suite's checks as functions: tests/test_cuda_gpu.py runs them all, and
tests/test_cuda_mutations.py runs some on mutated kernels to show they fail.

Each raises (AssertionError, or the device's own error) when the CUDA backend's
result differs from the numpy reference or the CPU backend.
"""
from __future__ import annotations

import numpy as np

from synapse_gpu.backends import cpu, cuda, cuda_source
from synapse_gpu.reference import requant as R
from synapse_gpu.reference.requant import requant_zp_inside, round_shift_zp

from . import cases

BATCHES = (37, 65, 129, 257)  # odd sizes: the last block is partly idle


def spanning_batch(graph):
    """The smallest of BATCHES at which every launch of the graph spans 3 blocks or more."""
    trav = cases.traversal(graph)
    per_sample = min(abs(int(np.prod(trav.shapes[n.outputs[0]]))) for n in trav.order)
    return next(b for b in BATCHES if per_sample * b > 2 * cuda.BLOCK)


def run_gpu(graph, feeds, trace=False):
    trav = cases.traversal(graph)
    exe = cuda.prepare(graph, trav)
    return exe, trav, exe.run(feeds, trace=trace)


def check_op(name, zx, zy):
    """One op case, at a batch spanning several blocks, against the reference and the CPU."""
    graph, _ = cases.op_case(name, zx, zy)
    graph, feeds = cases.op_case(name, zx, zy, batch=spanning_batch(graph))
    _, trav, (out, _) = run_gpu(graph, feeds)
    want = cases.reference_run(graph, trav, feeds)
    cpu_out, _ = cpu.prepare(graph, trav).run(feeds)
    for t in graph.outputs:
        assert out[t.name].dtype == np.int8 and out[t.name].shape == want[t.name].shape
        np.testing.assert_array_equal(out[t.name], want[t.name])
        np.testing.assert_array_equal(out[t.name], cpu_out[t.name])


def check_model_trace(model, batch=65):
    """Outputs and every node's output (the trace) equal to the CPU backend's."""
    graph, feeds = cases.model_case(model, batch=batch)
    _, trav, (out, steps) = run_gpu(graph, feeds, trace=True)
    cpu_out, cpu_steps = cpu.prepare(graph, trav).run(feeds, trace=True)
    for t in graph.outputs:
        np.testing.assert_array_equal(out[t.name], cpu_out[t.name])
    assert [s[:2] for s in steps] == [s[:2] for s in cpu_steps]
    for (node, _, y), (_, _, want) in zip(steps, cpu_steps):
        np.testing.assert_array_equal(y, want, err_msg=f"first disagreement at node {node}")


def check_batch_invariance(model, batch=37, samples=(0, 1, 17, 36)):
    """Sample i's output never depends on the other samples or the batch size."""
    graph, feeds = cases.model_case(model, batch=batch)
    exe = cuda.prepare(graph, cases.traversal(graph))
    full, _ = exe.run(feeds)
    for i in samples:
        one, _ = exe.run({k: v[i:i + 1] for k, v in feeds.items()})
        for t in graph.outputs:
            np.testing.assert_array_equal(one[t.name], full[t.name][i:i + 1])
    perm = np.random.default_rng(0).permutation(batch)
    shuffled, _ = exe.run({k: v[perm] for k, v in feeds.items()})
    for t in graph.outputs:
        np.testing.assert_array_equal(shuffled[t.name], full[t.name][perm])


# ------------------------------------------------------------------ helpers on the device

HELPER_KERNELS = r"""
extern "C" __global__ void t_bit_length(const i64* v, i64* out, i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) out[i] = syn_bit_length(v[i]);
}
extern "C" __global__ void t_round_to_24_bits(const i64* v, i64* out, i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) out[i] = syn_round_to_24_bits(v[i]);
}
extern "C" __global__ void t_round_shift_zp(const i64* v, const i64* s, const i64* z, i64* out,
                                            i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) out[i] = syn_round_shift_zp(v[i], s[i], z[i]);
}
extern "C" __global__ void t_requant(const i64* acc, const i64* m, const i64* k, const i64* z,
                                     i8* out, i8* out_zp_inside, i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) {
        out[i] = syn_requant(acc[i], m[i], k[i], z[i], -128, 127);
        out_zp_inside[i] = syn_requant_zp_inside(acc[i], m[i], k[i], z[i], -128, 127);
    }
}
"""


class Helpers:
    """synapse_int.cuh's helpers as kernels over arrays, on the current `cupy` device."""

    def __init__(self):
        import cupy as cp

        self.cp = cp
        header = (cuda_source._kernel_files() / "synapse_int.cuh").read_text()
        self.mod = cp.RawModule(code=header + HELPER_KERNELS, options=cuda.NVRTC_OPTIONS)

    def launch(self, name, *arrays, out_dtypes):
        cp, n = self.cp, arrays[0].size
        dev_in = [cp.asarray(np.ascontiguousarray(a, np.int64)) for a in arrays]
        dev_out = [cp.empty(n, dt) for dt in out_dtypes]
        self.mod.get_function(name)((cuda.grid_for(n),), (cuda.BLOCK,),
                                    (*dev_in, *dev_out, np.int64(n)))
        return [o.get() for o in dev_out]


def _wide_ints(rng, n, bits):
    b = rng.integers(0, bits + 1, n)
    mag = rng.integers(0, 1 << 62, n, dtype=np.int64) >> (62 - b)
    return np.where(rng.random(n) < 0.5, -mag, mag)


def check_bit_length_and_rounding(helpers, n=1_000_000):
    rng = np.random.default_rng(0)
    p = np.array([1 << b for b in range(62)], np.int64)
    v = np.concatenate([[0, 1, 3], p, p - 1, p + 1, _wide_ints(rng, n, 60)])
    (bl,) = helpers.launch("t_bit_length", np.abs(v), out_dtypes=[np.int64])
    np.testing.assert_array_equal(bl, R.bit_length(np.abs(v)))
    (r24,) = helpers.launch("t_round_to_24_bits", v, out_dtypes=[np.int64])
    np.testing.assert_array_equal(r24, R.round_to_24_bits(v))
    s = rng.integers(-70, 90, v.size)
    z = rng.integers(-128, 128, v.size)
    (rz,) = helpers.launch("t_round_shift_zp", v, s, z, out_dtypes=[np.int64])
    np.testing.assert_array_equal(rz, round_shift_zp(v, s, z))


def check_requant(helpers, n=4_000_000):
    rng = np.random.default_rng(1)
    acc = rng.integers(-(1 << 31), 1 << 31, n)
    acc[:4] = [0, -(1 << 31), (1 << 31) - 1, 1 << 24]
    M = np.where(rng.random(n) < 0.5, np.exp2(rng.uniform(-150, 64, n)),
                 np.exp2(rng.integers(-20, 3, n).astype(float))).astype(np.float32)
    m, k = R.quantize_multiplier(M)
    z = rng.integers(-128, 128, n)
    y, y_in = helpers.launch("t_requant", acc, m, k, z, out_dtypes=[np.int8, np.int8])
    np.testing.assert_array_equal(y, R.requant(acc, m, k, z))
    np.testing.assert_array_equal(y_in, requant_zp_inside(acc, m, k, z))
