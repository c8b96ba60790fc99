// elementwise.cu: requantize, batchnorm, relu, clip, prelu, add, mul, lut
// (reference/elementwise.py, reference/tables.py).
//
// Variants:
//   v1  naive: one thread per output element.
//
// Per-channel params run along axis 1 of (N, C, inner...): channel = i / inner % C.
// requant adds z_y after rounding (MLAS); mul adds it before (ONNX Runtime's
// QLinearMul): the two differ only at exact ties with an odd z_y. add emulates
// QLinearAdd's float32 fused multiply-adds (below).
// add and mul broadcast like numpy through a table (meta) holding y's shape and
// each operand's strides along y's axes (0 where broadcast).
// Bounds: |x - z_x| <= 255; batchnorm |acc| <= 255 * 128 + |bias| < 2^31 (checked at
// load); prelu |d * slope| <= 32640; mul |da * db| <= 65025; add needs int64 (below).
#include "synapse_int.cuh"

__host__ __device__ __forceinline__ i8 requantize_output(
    const i8* x, i64 i, i64 x_zero_point, i64 y_zero_point, i64 multiplier, i64 shift,
    i64 qmin, i64 qmax) {
    return syn_requant(x[i] - x_zero_point, multiplier, shift, y_zero_point, qmin, qmax);
}

extern "C" __global__ void requantize_v1(
    const i8* x, i8* y, i64 n,
    i64 x_zero_point, i64 y_zero_point, i64 multiplier, i64 shift, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, n)
        y[i] = requantize_output(x, i, x_zero_point, y_zero_point, multiplier, shift, qmin, qmax);
}

// acc = (x - z_x) * scale[c] + bias[c], requantized per channel c. One product and
// one sum: computed in int64, which equals int32 under the load-time bound at no cost.
__host__ __device__ __forceinline__ i8 batchnorm_output(
    const i8* x, const i8* scale, const int* bias, const i64* multiplier, const i64* shift,
    i64 i, i64 C, i64 inner, i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    const i64 c = i / inner % C;
    const i64 acc = (x[i] - x_zero_point) * scale[c] + bias[c];
    return syn_requant(acc, multiplier[c], shift[c], y_zero_point, qmin, qmax);
}

extern "C" __global__ void batchnorm_v1(
    const i8* x, const i8* scale, const int* bias, const i64* multiplier, const i64* shift,
    i8* y, i64 n, i64 C, i64 inner, i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, n)
        y[i] = batchnorm_output(x, scale, bias, multiplier, shift, i, C, inner, x_zero_point,
                                y_zero_point, qmin, qmax);
}

// Real 0 is the code z_x: y = max(x, z_x), same scale and zero point.
__host__ __device__ __forceinline__ i8 relu_output(const i8* x, i64 i, i64 x_zero_point) {
    return (i8)syn_max(x[i], x_zero_point);
}

extern "C" __global__ void relu_v1(const i8* x, i8* y, i64 n, i64 x_zero_point) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = relu_output(x, i, x_zero_point);
}

__host__ __device__ __forceinline__ i8 clip_output(const i8* x, i64 i, i64 qmin, i64 qmax) {
    return (i8)syn_clamp(x[i], qmin, qmax);
}

extern "C" __global__ void clip_v1(const i8* x, i8* y, i64 n, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = clip_output(x, i, qmin, qmax);
}

// d = x - z_x; d >= 0: requant(d; pos), else requant(d * slope[c]; multiplier[c], shift[c]).
__host__ __device__ __forceinline__ i8 prelu_output(
    const i8* x, const i8* slope, const i64* multiplier, const i64* shift, i64 i, i64 C,
    i64 inner, i64 x_zero_point, i64 y_zero_point, i64 pos_multiplier, i64 pos_shift,
    i64 qmin, i64 qmax) {
    const i64 d = x[i] - x_zero_point;
    if (d >= 0) return syn_requant(d, pos_multiplier, pos_shift, y_zero_point, qmin, qmax);
    const i64 c = i / inner % C;
    return syn_requant(d * slope[c], multiplier[c], shift[c], y_zero_point, qmin, qmax);
}

extern "C" __global__ void prelu_v1(
    const i8* x, const i8* slope, const i64* multiplier, const i64* shift, i8* y,
    i64 n, i64 C, i64 inner, i64 x_zero_point, i64 y_zero_point, i64 pos_multiplier,
    i64 pos_shift, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, n)
        y[i] = prelu_output(x, slope, multiplier, shift, i, C, inner, x_zero_point, y_zero_point,
                            pos_multiplier, pos_shift, qmin, qmax);
}

// onnxruntime's QLinearAdd (x86 AVX2 FMA) emulated exactly in integers (proof and
// bounds: reference/elementwise.py:add): on the raw codes (uint8 codes are int8 + 128),
// t = f32 round of (inner operand) * its multiplier + fixed, u = f32 round of
// (outer operand) * its multiplier + t, y = rhe(u / 2^K); out of int32 is cvtps2dq's
// indefinite -2^31. Operands < 2^8, multipliers < 2^51, |fixed| < 2^59: every sum is
// below 2^61 in int64.
__host__ __device__ __forceinline__ i8 add_output(
    const i8* a, const i8* b, const i64* meta, i64 i, i64 rank, i64 code_offset,
    i64 a_multiplier, i64 b_multiplier, i64 fixed, i64 shift, i64 a_first, i64 qmin, i64 qmax) {
    const i64 ra = a[syn_offset(i, rank, meta, meta + rank)] + code_offset;
    const i64 rb = b[syn_offset(i, rank, meta, meta + 2 * rank)] + code_offset;
    const i64 t = syn_round_to_24_bits(a_first ? ra * a_multiplier + fixed
                                               : rb * b_multiplier + fixed);
    const i64 u = syn_round_to_24_bits(a_first ? rb * b_multiplier + t : ra * a_multiplier + t);
    i64 y = syn_round_shift(u, shift);
    if (y >= ((i64)1 << 31) || y < -((i64)1 << 31)) y = -((i64)1 << 31);
    return (i8)syn_clamp(y - code_offset, qmin, qmax);
}

extern "C" __global__ void add_v1(
    const i8* a, const i8* b, const i64* meta, i8* y, i64 n, i64 rank, i64 code_offset,
    i64 a_multiplier, i64 b_multiplier, i64 fixed, i64 shift, i64 a_first, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, n)
        y[i] = add_output(a, b, meta, i, rank, code_offset, a_multiplier, b_multiplier, fixed,
                          shift, a_first, qmin, qmax);
}

// y = requant_zp_inside((a - z_a) * (b - z_b)), as ONNX Runtime's QLinearMul rounds.
__host__ __device__ __forceinline__ i8 mul_output(
    const i8* a, const i8* b, const i64* meta, i64 i, i64 rank, i64 a_zero_point,
    i64 b_zero_point, i64 y_zero_point, i64 multiplier, i64 shift, i64 qmin, i64 qmax) {
    const i64 da = a[syn_offset(i, rank, meta, meta + rank)] - a_zero_point;
    const i64 db = b[syn_offset(i, rank, meta, meta + 2 * rank)] - b_zero_point;
    return syn_requant_zp_inside(da * db, multiplier, shift, y_zero_point, qmin, qmax);
}

extern "C" __global__ void mul_v1(
    const i8* a, const i8* b, const i64* meta, i8* y, i64 n, i64 rank,
    i64 a_zero_point, i64 b_zero_point, i64 y_zero_point, i64 multiplier, i64 shift,
    i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, n)
        y[i] = mul_output(a, b, meta, i, rank, a_zero_point, b_zero_point, y_zero_point,
                          multiplier, shift, qmin, qmax);
}

// y = table[x + 128]: the table was computed once at build time (no float here).
__host__ __device__ __forceinline__ i8 lut_output(const i8* x, const i8* table, i64 i) {
    return table[x[i] + 128];
}

extern "C" __global__ void lut_v1(const i8* x, const i8* table, i8* y, i64 n) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = lut_output(x, table, i);
}
