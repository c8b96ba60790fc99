// dense.cu: dense (fully connected) and matmul (reference/dense.py).
//
// Variants:
//   v1  naive: one thread per output element, the reduction over k in ascending
//       order, int32 accumulator.
//   v2  dense_v2: conv v2's implicit-GEMM core (synapse_igemm.cuh): output features
//       as GEMM rows, rows of x as pixels, 64 x 64 tiles in shared memory, dp4a.
//   v3  dense_v3: the same tiles on tensor cores (mma.sync m16n8k32 s8, sm_80+),
//       requantization fused.
//   v5  dense_v5: v3 with cp.async double buffering (sm_80+): rows of x, and of W
//       if trans_w, are contiguous in K and copied into the other shared buffer
//       while this step is multiplied (where K % 16 = 0; otherwise registers).
//   matmul_v2, _v3, _v5: the same core per batch matrix (a's rows as GEMM rows,
//       b's columns as GEMM columns, b gathered down its column), the row sums of
//       a and column sums of b taken from the tiles for the two zero points; v5
//       copies a's rows with cp.async.
// Every variant gives the v1 bits; synapse_gpu/backends/cuda_variants.py chooses.
// Overflow: the core proves at load that the int32 accumulator cannot overflow:
// dense per output column j, sum_k |W[k, j] - z_w[j]| * max|x - z_x| + |bias[j]| < 2^31;
// matmul K * max|a - z_a| * max|b - z_b| < 2^31.
#include "synapse_int.cuh"
#include "synapse_igemm.cuh"

// y[r, j] of x (rows, K) times W (K, M); W[k, j] = w[j, k] if trans_w (w stored
// (M, K)) else w[k, j] (w stored (K, M)).
__host__ __device__ __forceinline__ i8 dense_output(
    const i8* x, const i8* w, const int* bias, const i64* multiplier, const i64* shift,
    const int* w_zero_point, i64 i, i64 K, i64 M, i64 trans_w,
    i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    const i64 j = i % M;
    const i8* xr = x + i / M * K;
    const i64 zw = w_zero_point[j];
    int acc = bias[j];
    for (i64 k = 0; k < K; ++k) {
        const i64 wv = trans_w ? w[j * K + k] : w[k * M + j];
        acc += (int)(xr[k] - x_zero_point) * (int)(wv - zw);
    }
    return syn_requant(acc, multiplier[j], shift[j], y_zero_point, qmin, qmax);
}

extern "C" __global__ void dense_v1(
    const i8* x, const i8* w, const int* bias, const i64* multiplier, const i64* shift,
    const int* w_zero_point, i8* y,
    i64 rows, i64 K, i64 M, i64 trans_w, i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, rows * M)
        y[i] = dense_output(x, w, bias, multiplier, shift, w_zero_point, i, K, M, trans_w,
                            x_zero_point, y_zero_point, qmin, qmax);
}

// y[..., r, c] = requant(sum_k (a[..., r, k] - z_a) * (b[..., k, c] - z_b)) with numpy
// broadcasting over the leading (batch) axes. meta holds, for the `rank` batch
// axes of y: y's batch shape, then a's and b's matrix strides along them (in
// elements, 0 where that operand is broadcast).
__host__ __device__ __forceinline__ i8 matmul_output(
    const i8* a, const i8* b, const i64* meta, i64 i, i64 rank, i64 M, i64 K, i64 N,
    i64 a_zero_point, i64 b_zero_point, i64 y_zero_point, i64 multiplier, i64 shift,
    i64 qmin, i64 qmax) {
    const i64 c = i % N;
    const i64 r = i / N % M;
    const i64 batch = i / (M * N);
    const i8* ar = a + syn_offset(batch, rank, meta, meta + rank) + r * K;
    const i8* bc = b + syn_offset(batch, rank, meta, meta + 2 * rank) + c;
    int acc = 0;
    for (i64 k = 0; k < K; ++k)
        acc += (int)(ar[k] - a_zero_point) * (int)(bc[k * N] - b_zero_point);
    return syn_requant(acc, multiplier, shift, y_zero_point, qmin, qmax);
}

#define SYN_MATMUL_PARAMS                                                                   \
    const i8* a, const i8* b, const i64* meta, i8* y,                                       \
    i64 batches, i64 rank, i64 M, i64 K, i64 N,                                             \
    i64 a_zero_point, i64 b_zero_point, i64 y_zero_point, i64 multiplier, i64 shift,        \
    i64 qmin, i64 qmax

extern "C" __global__ void matmul_v1(SYN_MATMUL_PARAMS) {
    SYN_FOR_EACH_OUTPUT(i, batches * M * N)
        y[i] = matmul_output(a, b, meta, i, rank, M, K, N, a_zero_point, b_zero_point,
                             y_zero_point, multiplier, shift, qmin, qmax);
}

// ---------------------------------------------------------------- v2, v3, v5
// dense_v1's arguments, corr (synapse_igemm.cuh) in place of bias (so x_zero_point
// is not read). One launch of ceil(M / 64) * ceil(rows / 64) blocks.
#define SYN_DENSE_GEMM_PARAMS                                                                   \
    const i8* x, const i8* w, const i64* corr, const i64* multiplier, const i64* shift,         \
    const int* w_zero_point, i8* y,                                                             \
    i64 rows, i64 K, i64 M, i64 trans_w, i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax
#define SYN_DENSE_GEMM(variant)                                                                 \
    (void)x_zero_point;                                                                         \
    const DenseGemm g = {{x, (int)K, (int)rows}, w, trans_w, (int)M};                           \
    const Epilogue e = {corr, multiplier, shift, w_zero_point, y_zero_point, qmin, qmax};       \
    SYN_IGEMM(variant, g, e, y, 1)

extern "C" __global__ void dense_v2(SYN_DENSE_GEMM_PARAMS) { SYN_DENSE_GEMM(v2); }

extern "C" __global__ void dense_v3(SYN_DENSE_GEMM_PARAMS) { SYN_DENSE_GEMM(v3); }

extern "C" __global__ void dense_v5(SYN_DENSE_GEMM_PARAMS) { SYN_DENSE_GEMM(v5); }

// matmul_v1's arguments. One launch of batches * ceil(M / 64) * ceil(N / 64) blocks.
#define SYN_MATMUL_GEMM(variant)                                                                \
    const MatmulGemm g = {a, b, meta, rank, (int)M, (int)K, (int)N, 0};                         \
    const MatmulEpilogue e = {K, a_zero_point, b_zero_point, y_zero_point, multiplier, shift,   \
                              qmin, qmax};                                                      \
    SYN_IGEMM(variant, g, e, y, (int)batches)

extern "C" __global__ void matmul_v2(SYN_MATMUL_PARAMS) { SYN_MATMUL_GEMM(v2); }

extern "C" __global__ void matmul_v3(SYN_MATMUL_PARAMS) { SYN_MATMUL_GEMM(v3); }

extern "C" __global__ void matmul_v5(SYN_MATMUL_PARAMS) { SYN_MATMUL_GEMM(v5); }
