"""The emulated CUDA device itself (tests/emucuda): the execution model, the driver's
rules, memory checks, streams, intrinsics and the warp matrix instructions, each
against an independent numpy model. Needs g++, not a GPU."""
import shutil

import numpy as np
import pytest

from emucuda import cupy_standin
from emucuda.device import POISON_BYTE, CUDADriverError, EmulatorError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")

PRELUDE = "typedef long long i64;\n"


@pytest.fixture(scope="module")
def cp():
    with cupy_standin.installed() as cp:
        yield cp


def kernel(cp, code, name):
    return cp.RawModule(code=PRELUDE + code, options=("-std=c++17",)).get_function(name)


# ------------------------------------------------------------------ intrinsics

INTRINSICS = r"""
extern "C" __global__ void intrinsics(const unsigned* a, const unsigned* b, const i64* w,
                                      int* out, i64 n) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int* o = out + 6 * i;
    o[0] = __clzll(w[i]);
    o[1] = __clz((int)a[i]);
    o[2] = (int)__byte_perm(a[i], b[i], b[i] & 0xffff);
    o[3] = __dp4a((int)a[i], (int)b[i], (int)(w[i] & 0x7fffffff));
    o[4] = __popc(a[i]) + 100 * __ffs((int)b[i]);
    o[5] = (int)__brev(a[i]);
}
"""


def _bytes(v):
    return [(v >> (8 * k)) & 0xFF for k in range(4)]


def test_intrinsics_match_their_ptx_definitions(cp):
    rng = np.random.default_rng(0)
    n = 300
    a = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    w = (rng.integers(0, 2**62, n) >> rng.integers(0, 63, n)).astype(np.int64)
    a[:3], b[:3], w[:3] = [0, 1, 0xFFFFFFFF], [0, 0x76543210, 0x3210], [0, 1, -1]
    out = cp.empty(6 * n, np.int32)
    f = kernel(cp, INTRINSICS, "intrinsics")
    f((2,), (256,), (cp.asarray(a), cp.asarray(b), cp.asarray(w), out, np.int64(n)))
    got = out.get().reshape(n, 6)
    for i in range(n):
        x, y, v = int(a[i]), int(b[i]), int(w[i]) & (2**64 - 1)
        both = _bytes(x) + _bytes(y)
        perm = sum(both[(y >> (4 * k)) & 7] << (8 * k) for k in range(4))
        sb = [t - 256 if t > 127 else t for t in _bytes(x)]
        tb = [t - 256 if t > 127 else t for t in _bytes(y)]
        dp = (sum(p * q for p, q in zip(sb, tb)) + (int(w[i]) & 0x7FFFFFFF)) & (2**32 - 1)
        ffs = (y & -y).bit_length()
        want = [64 - v.bit_length(), 32 - x.bit_length(), perm, dp, bin(x).count("1") + 100 * ffs,
                int(f"{x:032b}"[::-1], 2)]
        assert [int(g) & (2**32 - 1) for g in got[i]] == [t & (2**32 - 1) for t in want], i


def test_device_branches_are_compiled_and_host_headers_are_not_there(cp):
    code = "extern \"C\" __global__ void k(int* o) { o[0] = __CUDA_ARCH__; }"
    out = cp.empty(1, np.int32)
    kernel(cp, code, "k")((1,), (1,), (out,))
    assert out.get()[0] == 800
    for header in ("<cstdint>", "<stdint.h>", "<climits>", "<algorithm>"):
        with pytest.raises(cp.cuda.compiler.CompileException, match=header.strip("<>")):
            kernel(cp, f"#include {header}\n" + code, "k")


# ------------------------------------------------------------------ execution model

BLOCK_SCAN = r"""
extern "C" __global__ void block_ops(const int* x, int* y, int* counts, i64 n) {
    __shared__ int s[256];
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : 0;
    __syncthreads();
    const int rev = s[blockDim.x - 1 - threadIdx.x];
    const int c = __syncthreads_count(rev > 0);
    if (threadIdx.x == 0) counts[blockIdx.x] = c;
    if (i < n) y[i] = rev;
}
"""


def test_shared_memory_and_barriers(cp):
    rng = np.random.default_rng(1)
    n, block = 1000, 256
    x = rng.integers(-50, 50, n).astype(np.int32)
    y, counts = cp.empty(n, np.int32), cp.empty(4, np.int32)
    kernel(cp, BLOCK_SCAN, "block_ops")((4,), (block,), (cp.asarray(x), y, counts, np.int64(n)))
    padded = np.zeros(4 * block, np.int32)
    padded[:n] = x
    rev = padded.reshape(4, block)[:, ::-1]
    np.testing.assert_array_equal(y.get(), rev.reshape(-1)[:n])
    np.testing.assert_array_equal(counts.get(), (rev > 0).sum(axis=1))


SHUFFLES = r"""
extern "C" __global__ void shuffles(const int* x, int* out) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
    const int v = x[t];
    int* o = out + 8 * t;
    o[0] = __shfl_sync(0xffffffffu, v, (lane * 7) % 32);
    o[1] = __shfl_up_sync(0xffffffffu, v, 3);
    o[2] = __shfl_down_sync(0xffffffffu, v, 5);
    o[3] = __shfl_xor_sync(0xffffffffu, v, 6);
    o[4] = __shfl_down_sync(0xffffffffu, v, 3, 16);
    o[5] = (int)__ballot_sync(0xffffffffu, v % 3 == 0);
    o[6] = __any_sync(0xffffffffu, v == 1000) + 2 * __all_sync(0xffffffffu, v >= 0);
    o[7] = (int)__shfl_xor_sync(0xffffffffu, (long long)v << 33, 1) >> 1;
}
"""


def test_warp_shuffles_and_votes(cp):
    x = np.random.default_rng(2).integers(0, 1000, 128).astype(np.int32)
    out = cp.empty(8 * 128, np.int32)
    kernel(cp, SHUFFLES, "shuffles")((2,), (64,), (cp.asarray(x), out))
    got = out.get().reshape(128, 8)
    for w in range(4):
        v = x[32 * w:32 * w + 32]
        lane = np.arange(32)
        seg16 = lane & ~15
        want = [v[(lane * 7) % 32], np.where(lane >= 3, v[np.maximum(lane - 3, 0)], v),
                np.where(lane + 5 < 32, v[np.minimum(lane + 5, 31)], v), v[lane ^ 6],
                np.where((lane & 15) + 3 < 16, v[np.minimum(seg16 + (lane & 15) + 3, 31)], v),
                np.full(32, sum(1 << i for i in range(32) if v[i] % 3 == 0)).astype(np.uint32)
                .view(np.int32), np.full(32, int((v == 1000).any()) + 2 * int((v >= 0).all())),
                np.zeros(32, np.int32)]  # (v << 33) truncated to int is 0: 64-bit moved whole
        for k, col in enumerate(want):
            np.testing.assert_array_equal(got[32 * w:32 * w + 32, k], col, err_msg=f"column {k}")


def test_divergent_barrier_is_a_deadlock_not_a_hang(cp):
    code = r"""extern "C" __global__ void k(int* o) {
        if (threadIdx.x == 5) return;
        o[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
    }"""
    with pytest.raises(EmulatorError, match="deadlock"):
        kernel(cp, code, "k")((1,), (32,), (cp.empty(32, np.int32),))
        cp.cuda.Device().synchronize()


def test_trap_is_reported(cp):
    code = 'extern "C" __global__ void k(int* o) { if (blockIdx.x == 2) __trap(); o[0] = 1; }'
    with pytest.raises(EmulatorError, match=r"__trap\(\).*block \(2,0,0\)"):
        kernel(cp, code, "k")((3,), (4,), (cp.empty(1, np.int32),))
        cp.cuda.Device().synchronize()


# ------------------------------------------------------------------ driver rules

COPY = r"""extern "C" __global__ void copy(const int* x, int* y, i64 n, int bias) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] + bias;
}"""


@pytest.mark.parametrize("grid,block", [((0,), (32,)), ((1,), (0,)), ((1,), (1025,)),
                                        ((1,), (32, 32, 2)), ((1, 65536), (32,)),
                                        ((1,), (1, 1, 65))])
def test_launch_limits(cp, grid, block):
    x = cp.empty(4, np.int32)
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        kernel(cp, COPY, "copy")(grid, block, (x, x, np.int64(4), np.int32(0)))


@pytest.mark.parametrize("args,match", [
    (lambda x: (x, x, np.int32(4), np.int32(0)), "argument 2: .* 8 bytes, the launch passes 4"),
    (lambda x: (x, x, np.int64(4), np.int64(0)), "argument 3: .* 4 bytes, the launch passes 8"),
    (lambda x: (x, x, np.int64(4), 0), "argument 3: .* 4 bytes, the launch passes 8"),
    (lambda x: (x, np.int64(0), np.int64(4), np.int32(0)), "argument 1: the parameter is a pointer"),
    (lambda x: (x, x, x, np.int32(0)), "argument 2: the parameter is not a pointer"),
    (lambda x: (x, x, np.int64(4)), "takes 4 arguments, the launch passes 3"),
])
def test_arguments_are_read_at_their_declared_sizes(cp, args, match):
    with pytest.raises(EmulatorError, match=match):
        kernel(cp, COPY, "copy")((1,), (32,), args(cp.empty(4, np.int32)))


def test_unwritten_memory_is_poisoned_and_guard_zones_catch_overruns(cp):
    f = kernel(cp, COPY, "copy")
    x, y = cp.asarray(np.arange(10, dtype=np.int32)), cp.empty(10, np.int32)
    assert (cp.empty(7, np.int8).get() == np.int8(POISON_BYTE - 256)).all()
    f((1,), (32,), (x, y[:9], np.int64(9), np.int32(1)))
    got = y.get()
    np.testing.assert_array_equal(got[:9], np.arange(1, 10))
    assert got[9] == np.frombuffer(bytes([POISON_BYTE] * 4), np.int32)[0]
    with pytest.raises(EmulatorError, match="past the end of an allocation of 40 bytes"):
        f((1,), (32,), (x, y, np.int64(11), np.int32(1)))  # reads and writes one past the end
        y.get()
    over = r"""extern "C" __global__ void before(int* y) { y[-1 - (int)threadIdx.x] = 0; }"""
    with pytest.raises(EmulatorError, match="before an allocation"):
        kernel(cp, over, "before")((1,), (2,), (cp.empty(4, np.int32),))
        cp.cuda.Device().synchronize()


def test_work_runs_in_stream_order_only(cp):
    """A non-blocking stream is not ordered with another stream or the default one."""
    f = kernel(cp, COPY, "copy")
    x = cp.asarray(np.arange(300, dtype=np.int32))
    y = cp.empty(300, np.int32)
    cp.cuda.Device().synchronize()  # the upload ran on the default stream
    a, b = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with a:
        f((2,), (256,), (x, y, np.int64(300), np.int32(5)))
    assert (y.get(stream=b) == np.frombuffer(bytes([POISON_BYTE] * 4), np.int32)[0]).all()
    a.synchronize()
    np.testing.assert_array_equal(y.get(stream=b), np.arange(300) + 5)
    blocking = cp.cuda.Stream()
    f((2,), (256,), (x, y, np.int64(300), np.int32(7)))  # the legacy default stream
    np.testing.assert_array_equal(y.get(stream=blocking), np.arange(300) + 7)


# ------------------------------------------------------------------ warp matrix instructions

MMA = r"""#include "synapse_warp.cuh"
// One warp per 16x8 output tile: A (16x32, row-major) and B^T (8x32: B column-major)
// staged in shared memory, fragments loaded with ldmatrix as tensor-core kernels do.
extern "C" __global__ void mma_tiles(const signed char* a, const signed char* bt, const int* c,
                                     int* d, unsigned* trans) {
    __shared__ __align__(16) signed char sa[16 * 32];
    __shared__ __align__(16) signed char sb[8 * 32];
    const int lane = threadIdx.x, tile = blockIdx.x;
    for (int k = lane; k < 16 * 32; k += 32) sa[k] = a[tile * 512 + k];
    for (int k = lane; k < 8 * 32; k += 32) sb[k] = bt[tile * 256 + k];
    __syncwarp();
    const int j = lane / 8, r = lane % 8;
    unsigned fa[4], fb[4], ft[4];
    syn_ldmatrix_x4(fa, sa + (r + 8 * (j & 1)) * 32 + 16 * (j >> 1));
    syn_ldmatrix_x4(fb, sb + r * 32 + 16 * (j & 1));
    syn_ldmatrix_x4_trans(ft, sa + (r + 8 * (j & 1)) * 32 + 16 * (j >> 1));
    int fc[4], fd[4];
    const int g = lane >> 2, t = lane & 3;
    for (int q = 0; q < 4; ++q) fc[q] = c[tile * 128 + (g + 8 * (q >> 1)) * 8 + 2 * t + (q & 1)];
    syn_mma_m16n8k32_s8(fd, fa, fb, fc);
    for (int q = 0; q < 4; ++q) d[tile * 128 + (g + 8 * (q >> 1)) * 8 + 2 * t + (q & 1)] = fd[q];
    for (int q = 0; q < 4; ++q) trans[(tile * 32 + lane) * 4 + q] = ft[q];
}
"""


def test_mma_and_ldmatrix_against_a_plain_matmul(cp):
    from synapse_gpu.backends.cuda_source import _kernel_files

    header = (_kernel_files() / "synapse_warp.cuh").read_text()
    code = MMA.replace('#include "synapse_warp.cuh"', header)
    rng = np.random.default_rng(3)
    tiles = 5
    a = rng.integers(-128, 128, (tiles, 16, 32)).astype(np.int8)
    b = rng.integers(-128, 128, (tiles, 32, 8)).astype(np.int8)
    a[0], b[0] = -128, -128  # 32 * 2^14 per dot product, plus c: wraps past int32
    c = rng.integers(-2**31, 2**31, (tiles, 16, 8)).astype(np.int32)
    d, trans = cp.empty(tiles * 128, np.int32), cp.empty(tiles * 128, np.uint32)
    bt = np.ascontiguousarray(b.transpose(0, 2, 1))
    kernel(cp, code, "mma_tiles")((tiles,), (32,), (cp.asarray(a), cp.asarray(bt), cp.asarray(c),
                                                    d, trans))
    want = (a.astype(np.int64) @ b.astype(np.int64) + c).astype(np.uint32).view(np.int32)
    np.testing.assert_array_equal(d.get().reshape(tiles, 16, 8), want)
    # .trans: lane l's register j holds elements (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4)
    # of b16 matrix j, where matrix j covers A's rows 8 (j & 1) .. and bytes 16 (j >> 1) ..
    h = a.view(np.uint16).reshape(tiles, 2, 8, 2, 8)  # tile, row half, row, col half, b16 col
    lane = np.arange(32)
    for j in range(4):
        m = h[:, j & 1, :, j >> 1, :]  # (tiles, 8 rows, 8 b16 columns)
        lo = m[:, 2 * (lane % 4), lane // 4].astype(np.uint32)
        hi = m[:, 2 * (lane % 4) + 1, lane // 4].astype(np.uint32)
        np.testing.assert_array_equal(trans.get().reshape(tiles, 32, 4)[:, :, j], lo | (hi << 16))


# ------------------------------------------------------------------ cp.async

# Each block stages 64 rows of 32 bytes (16-byte copies, a zero-filled tail from
# src_bytes) through two shared buffers, copy k + 1 in flight while row block k is
# summed, as a double-buffered kernel does; WAIT / BARRIER drop the wait or the
# barrier that make it correct.
CP_ASYNC = r"""
#include "synapse_async.cuh"
extern "C" __global__ void staged(const signed char* src, const int* src_bytes, int* out, i64 steps) {
    __shared__ __align__(16) signed char buf[2][64][32];
    const int t = threadIdx.x, row = t / 2, half = t % 2 * 16;
    const signed char* base = src + (i64)blockIdx.x * steps * 2048;
    int acc = 0;
    syn_cp_async<16>(&buf[0][row][half], base + row * 32 + half, src_bytes[t]);
    syn_cp_async_commit();
    for (i64 k = 0; k < steps; ++k) {
        const int b = (int)(k % 2);
        if (WAIT) syn_cp_async_wait<0>();
        if (BARRIER) __syncthreads();
        if (k + 1 < steps)
            syn_cp_async<16>(&buf[b ^ 1][row][half], base + (k + 1) * 2048 + row * 32 + half,
                             src_bytes[t]);
        syn_cp_async_commit();
        for (int j = 0; j < 16; ++j) acc += buf[b][(row + 1) % 64][half + j];  // a neighbour's row
    }
    syn_cp_async_wait<0>();
    out[blockIdx.x * blockDim.x + t] = acc;
}
"""


def _async_header():
    from synapse_gpu.backends.cuda_source import _kernel_files

    return (_kernel_files() / "synapse_async.cuh").read_text()


def _staged(cp, wait=1, barrier=1):
    code = f"#define WAIT {wait}\n#define BARRIER {barrier}\n" + CP_ASYNC.replace(
        '#include "synapse_async.cuh"', _async_header())
    return kernel(cp, code, "staged")


def test_cp_async_double_buffering_lands_at_the_wait(cp):
    rng = np.random.default_rng(4)
    blocks, steps = 3, 5
    src = rng.integers(-128, 128, (blocks, steps, 64, 2, 16)).astype(np.int8)
    src_bytes = rng.integers(0, 17, 128).astype(np.int32)
    src_bytes[:2] = [0, 16]
    out = cp.empty(blocks * 128, np.int32)
    _staged(cp)((blocks,), (128,), (cp.asarray(src), cp.asarray(src_bytes), out, np.int64(steps)))
    kept = np.arange(16) < src_bytes.reshape(64, 2, 1)  # zero fill past src-size
    staged = np.where(kept, src, 0).astype(np.int64)
    want = np.roll(staged, -1, axis=2).sum(axis=(1, 4)).reshape(blocks, 128)
    np.testing.assert_array_equal(out.get().reshape(blocks, 128), want)


@pytest.mark.parametrize("wait,barrier", [(0, 1), (1, 0)])
def test_cp_async_read_before_the_wait_or_barrier_sees_poison(cp, wait, barrier):
    """A missing wait_group or barrier gives a wrong answer, not the data by luck."""
    rng = np.random.default_rng(5)
    src = rng.integers(-128, 128, (1, 3, 64, 2, 16)).astype(np.int8)
    out = cp.empty(128, np.int32)
    full = cp.asarray(np.full(128, 16, np.int32))
    _staged(cp, wait, barrier)((1,), (128,), (cp.asarray(src), full, out, np.int64(3)))
    want = np.roll(src.astype(np.int64), -1, axis=2).sum(axis=(1, 4)).reshape(128)
    assert (out.get() != want).any()


CP_ASYNC_FAULTS = {
    "misaligned": ("syn_cp_async<16>(s + 4, p, 16);", "not aligned"),
    "src_size": ("syn_cp_async<8>(s, p, 9);", "src-size"),
    "never_waited": ("syn_cp_async<4>(s, p, 4); syn_cp_async_commit();", "never|no cp.async"),
}


@pytest.mark.parametrize("fault", sorted(CP_ASYNC_FAULTS))
def test_cp_async_misuse_is_reported(cp, fault):
    body, match = CP_ASYNC_FAULTS[fault]
    code = _async_header() + (
        "extern \"C\" __global__ void k(const int* p, int* o) {\n"
        "    __shared__ __align__(16) char s[32];\n"
        f"    {body}\n    o[threadIdx.x] = 0;\n}}\n")
    src = cp.asarray(np.zeros(8, np.int32))
    with pytest.raises(EmulatorError, match=match):
        kernel(cp, code, "k")((1,), (32,), (src, cp.empty(32, np.int32)))
        cp.cuda.Device().synchronize()


def test_cp_async_wait_group_n_leaves_the_n_newest_groups_in_flight(cp):
    code = _async_header() + r"""
extern "C" __global__ void k(const int* p, int* o) {
    __shared__ __align__(16) int s[3][4];
    for (int g = 0; g < 3; ++g) syn_cp_async<16>(s[g], p + 4 * g, 16), syn_cp_async_commit();
    syn_cp_async_wait<2>();
    for (int i = 0; i < 12; ++i) o[i] = s[i / 4][i % 4];
    syn_cp_async_wait<1>();
    for (int i = 0; i < 12; ++i) o[12 + i] = s[i / 4][i % 4];
    syn_cp_async_wait<0>();
}"""
    src = np.arange(1, 13, dtype=np.int32)
    out = cp.empty(24, np.int32)
    kernel(cp, code, "k")((1,), (1,), (cp.asarray(src), out))
    poison = np.full(4, POISON_BYTE, np.uint8).view(np.int32)[0]
    got = out.get().reshape(2, 3, 4)
    np.testing.assert_array_equal(got[0], [src[:4], [poison] * 4, [poison] * 4])
    np.testing.assert_array_equal(got[1], [src[:4], src[4:8], [poison] * 4])
