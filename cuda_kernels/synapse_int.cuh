// synapse_int.cuh: the integer helpers every Synapse kernel includes.
//
// Requantization reproduces reference/requant.py bit for bit (docs/SPEC.md,
// "Requantization"): an integer emulation of MLAS's float32 requantize
//     y = clamp(rint_half_even(f32(f32(acc) * M)) + z_y, qmin, qmax),  M = m * 2^-k,
// and its zero-point-inside twin (reference/elementwise.py) for add, mul, avg_pool.
// No floating point anywhere: every step is an exact int64 operation.
//
// Kernel conventions (synapse_gpu/backends/cuda.py packs arguments by them):
// - arguments: activation inputs, then params in docs/SPEC.md order, then the
//   output, then `long long` scalars (sizes, then attributes). Every scalar is a
//   long long so the host packs them all the same way (numpy int64).
// - one thread per output element: the host launches ceil(n / block) blocks.
//   SYN_FOR_EACH_OUTPUT is a grid-stride loop so that the same kernel body also
//   runs on the host (host_compat.h: a 1x1 "grid" visits every output in order).
// - each output is computed by a __host__ __device__ *_output function that
//   reads raw pointers and an index; reductions run in one ascending order.
//
// Compiles with nvcc/NVRTC, or with a host C++ compiler after host_compat.h.
#ifndef SYNAPSE_INT_CUH
#define SYNAPSE_INT_CUH

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__) && !defined(SYNAPSE_HOST_COMPAT)
#error "synapse_int.cuh: compile with nvcc/NVRTC, or include host_compat.h first"
#endif

typedef long long i64;
typedef signed char i8;

#define SYN_FOR_EACH_OUTPUT(i, n)                                                  \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n);         \
         i += (i64)blockDim.x * gridDim.x)

// Beyond this magnitude any result saturates int8 whatever the zero point; caps
// the left shift of a huge multiplier (k < 0) so int64 never overflows.
#define SYN_SATURATED (1LL << 40)

__host__ __device__ __forceinline__ i64 syn_abs(i64 v) { return v < 0 ? -v : v; }

__host__ __device__ __forceinline__ i64 syn_min(i64 a, i64 b) { return a < b ? a : b; }

__host__ __device__ __forceinline__ i64 syn_max(i64 a, i64 b) { return a > b ? a : b; }

__host__ __device__ __forceinline__ i64 syn_clamp(i64 v, i64 lo, i64 hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

// Significant bits of v >= 0 (0 for 0). The device intrinsic defines __clzll(0) = 64;
// the host builtin leaves 0 undefined, so the host path tests for it.
__host__ __device__ __forceinline__ int syn_bit_length(i64 v) {
#ifdef __CUDA_ARCH__
    return 64 - __clzll(v);
#else
    return v == 0 ? 0 : 64 - __builtin_clzll((unsigned long long)v);
#endif
}

// round_half_even(v / 2^s) for s >= 0 and |v| < 2^63. A shift above 62 acts as 62,
// as in requant.round_shift: the result is 0 then for |v| < 2^61 (below half).
__host__ __device__ __forceinline__ i64 syn_round_shift(i64 v, i64 s) {
    if (s <= 0) return v;
    if (s > 62) s = 62;
    const i64 a = syn_abs(v);
    i64 q = a >> s;
    const i64 r = a - (q << s);
    const i64 half = 1LL << (s - 1);
    q += (r > half) || (r == half && (q & 1));
    return v < 0 ? -q : q;
}

// v rounded to 24 significant bits, ties to even: the value of float32(v), for |v| < 2^61.
__host__ __device__ __forceinline__ i64 syn_round_to_24_bits(i64 v) {
    const i64 a = syn_abs(v);
    const int s = syn_bit_length(a) - 24;
    if (s <= 0) return v;
    // Rounding may carry into bit 25 (a power of two): still exact, still 24 bits.
    const i64 q = syn_round_shift(a, s) << s;
    return v < 0 ? -q : q;
}

// round_half_even(p * 2^-k) for any k. k < 0 is a left shift: once |p| >= 1 is
// shifted by 9 bits it exceeds the int8 range for every zero point, so the shift
// is capped at 9 and |p| at 2^40 (no int64 overflow, same clamped result).
__host__ __device__ __forceinline__ i64 syn_scale_by_pow2(i64 p, i64 k) {
    if (k >= 0) return syn_round_shift(p, k);
    const i64 mag = syn_min(syn_abs(p), SYN_SATURATED) << syn_min(-k, 9);
    return p < 0 ? -mag : mag;
}

// int32 accumulator -> int8 (docs/SPEC.md). |acc| <= 2^31 and m < 2^24, so
// |a * m| < 2^55: every intermediate fits int64.
__host__ __device__ __forceinline__ i8 syn_requant(i64 acc, i64 m, i64 k, i64 zero_point,
                                                   i64 qmin, i64 qmax) {
    const i64 a = syn_round_to_24_bits(acc);
    const i64 p = syn_round_to_24_bits(a * m);
    return (i8)syn_clamp(syn_scale_by_pow2(p, k) + zero_point, qmin, qmax);
}

// round_half_even(v * 2^-s + z) for any integer shift s: z joins BEFORE the
// rounding, so a tie goes to the even output code (ONNX Runtime's QLinearAdd,
// QLinearMul and QLinearAveragePool round float(v * M + z_y)); as
// elementwise.round_shift_zp. Exact for |v| < 2^63 when s <= 62; a larger s acts as
// 62 (result z for |v| < 2^61). s <= 0 scales up and saturates like requant.
__host__ __device__ __forceinline__ i64 syn_round_shift_zp(i64 v, i64 s, i64 z) {
    if (s <= 0) return syn_scale_by_pow2(v, s) + z;
    const i64 t = s > 62 ? 62 : s;
    i64 q = v >> t;                        // floor(v / 2^t): arithmetic shift
    const i64 r = v & ((1LL << t) - 1);    // v - q 2^t, in [0, 2^t)
    q += (r > (1LL << (t - 1))) || (r == (1LL << (t - 1)) && ((q + z) & 1));
    return q + z;
}

// requant with the zero point added before the last rounding (see above):
//     y = clamp(rhe(f32(f32(acc) * M) + z), qmin, qmax); |acc| <= 2^31.
__host__ __device__ __forceinline__ i8 syn_requant_zp_inside(i64 acc, i64 m, i64 k,
                                                             i64 zero_point, i64 qmin,
                                                             i64 qmax) {
    const i64 p = syn_round_to_24_bits(syn_round_to_24_bits(acc) * m);
    return (i8)syn_clamp(syn_round_shift_zp(p, k, zero_point), qmin, qmax);
}

// Offset in an operand of output element i, for an output of the given shape
// (row-major) and the operand's strides along the output's axes (0 where the
// operand is broadcast). Used by transpose, add, mul and matmul's batch axes.
__host__ __device__ __forceinline__ i64 syn_offset(i64 i, i64 rank, const i64* shape,
                                                   const i64* strides) {
    i64 off = 0;
    for (i64 d = rank - 1; d >= 0; --d) {
        off += i % shape[d] * strides[d];
        i /= shape[d];
    }
    return off;
}

#endif  // SYNAPSE_INT_CUH
