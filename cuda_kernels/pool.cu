// pool.cu: max_pool, avg_pool (1-3 spatial axes) and global_avg_pool (reference/pool.py).
//
// Variants:
//   v1  naive: one thread per output element, window taps in row-major
//       (ascending) order.
//
// 1-D and 2-D pools run as 3-D ones with unit leading spatial axes (kernel 1,
// stride 1, no padding, dilation 1), which visits the same taps in the same order.
// A tap at o * stride - pad_begin + t * dilation is valid inside [0, n) and in
// the padded region inside [-pad_begin, n + pad_end).
// Bounds: |sum| <= 255 * taps (avg_pool) or 255 * spatial size (global): the
// core bounds both below 2^31 at load.
#include "synapse_int.cuh"

struct PoolArgs {
    const i8* x;  // (N, C, D, H, W)
    i64 C, D, H, W, OD, OH, OW, KD, KH, KW;
    i64 stride_d, stride_h, stride_w;
    i64 pad_d, pad_h, pad_w;              // begins
    i64 pad_end_d, pad_end_h, pad_end_w;  // ends (avg_pool's count_include_pad)
    i64 dil_d, dil_h, dil_w;
};

// Visits the taps of output element i (N, C, OD, OH, OW) in row-major order:
// f(value, valid, in_padded_region). value is read only where valid.
template <typename F>
__host__ __device__ __forceinline__ void pool_window(const PoolArgs& a, i64 i, F& f) {
    const i64 ow = i % a.OW;
    i /= a.OW;
    const i64 oh = i % a.OH;
    i /= a.OH;
    const i64 od = i % a.OD;
    const i64 nc = i / a.OD;
    const i8* xc = a.x + nc * a.D * a.H * a.W;
    for (i64 kd = 0; kd < a.KD; ++kd) {
        const i64 id = od * a.stride_d - a.pad_d + kd * a.dil_d;
        const bool vd = id >= 0 && id < a.D;
        const bool pd = id >= -a.pad_d && id < a.D + a.pad_end_d;
        for (i64 kh = 0; kh < a.KH; ++kh) {
            const i64 ih = oh * a.stride_h - a.pad_h + kh * a.dil_h;
            const bool vh = ih >= 0 && ih < a.H;
            const bool ph = ih >= -a.pad_h && ih < a.H + a.pad_end_h;
            for (i64 kw = 0; kw < a.KW; ++kw) {
                const i64 iw = ow * a.stride_w - a.pad_w + kw * a.dil_w;
                const bool valid = vd && vh && iw >= 0 && iw < a.W;
                const bool padded = pd && ph && iw >= -a.pad_w && iw < a.W + a.pad_end_w;
                f(valid ? xc[(id * a.H + ih) * a.W + iw] : (i8)0, valid, padded);
            }
        }
    }
}

struct MaxTap {
    i64 m;  // -128, the identity of max on int8: a window without a valid tap gives it
    __host__ __device__ void operator()(i8 v, bool valid, bool) {
        if (valid && v > m) m = v;
    }
};

// Max over the valid taps; padding never wins. Same scale and zero point in and out.
__host__ __device__ __forceinline__ i8 max_pool_output(const PoolArgs& a, i64 i) {
    MaxTap t = {-128};
    pool_window(a, i, t);
    return (i8)t.m;
}

struct SumTap {
    i64 x_zero_point, count_include_pad;
    int sum, count;
    __host__ __device__ void operator()(i8 v, bool valid, bool padded) {
        if (valid) sum += v - (int)x_zero_point;
        count += count_include_pad ? padded : valid;
    }
};

// sum of (x - z_x) over the valid taps (padding is real 0); n = taps in the padded
// region if count_include_pad else valid taps; y = requant_zp_inside(sum;
// multiplier[n], shift[n], z_y): the tables hold M/n, so dividing and rescaling is
// one rounding, ties to the even output code (ONNX Runtime's QLinearAveragePool).
__host__ __device__ __forceinline__ i8 avg_pool_output(
    const PoolArgs& a, const i64* multiplier, const i64* shift, i64 i, i64 count_include_pad,
    i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    SumTap t = {x_zero_point, count_include_pad, 0, 0};
    pool_window(a, i, t);
    return syn_requant_zp_inside(t.sum, multiplier[t.count], shift[t.count], y_zero_point,
                                 qmin, qmax);
}

extern "C" __global__ void max_pool_v1(
    const i8* x, i8* y,
    i64 N, i64 C, i64 D, i64 H, i64 W, i64 OD, i64 OH, i64 OW, i64 KD, i64 KH, i64 KW,
    i64 stride_d, i64 stride_h, i64 stride_w, i64 pad_d, i64 pad_h, i64 pad_w,
    i64 dil_d, i64 dil_h, i64 dil_w) {
    const PoolArgs a = {x, C, D, H, W, OD, OH, OW, KD, KH, KW, stride_d, stride_h, stride_w,
                        pad_d, pad_h, pad_w, 0, 0, 0, dil_d, dil_h, dil_w};
    SYN_FOR_EACH_OUTPUT(i, N * C * OD * OH * OW) y[i] = max_pool_output(a, i);
}

extern "C" __global__ void avg_pool_v1(
    const i8* x, const i64* multiplier, const i64* shift, i8* y,
    i64 N, i64 C, i64 D, i64 H, i64 W, i64 OD, i64 OH, i64 OW, i64 KD, i64 KH, i64 KW,
    i64 stride_d, i64 stride_h, i64 stride_w, i64 pad_d, i64 pad_h, i64 pad_w,
    i64 pad_end_d, i64 pad_end_h, i64 pad_end_w, i64 dil_d, i64 dil_h, i64 dil_w,
    i64 count_include_pad, i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    const PoolArgs a = {x, C, D, H, W, OD, OH, OW, KD, KH, KW, stride_d, stride_h, stride_w,
                        pad_d, pad_h, pad_w, pad_end_d, pad_end_h, pad_end_w, dil_d, dil_h, dil_w};
    SYN_FOR_EACH_OUTPUT(i, N * C * OD * OH * OW)
        y[i] = avg_pool_output(a, multiplier, shift, i, count_include_pad, x_zero_point,
                               y_zero_point, qmin, qmax);
}

// y[n, c] = requant(sum over the S spatial positions of (x - z_x)), ascending.
__host__ __device__ __forceinline__ i8 global_avg_pool_output(
    const i8* x, i64 i, i64 S, i64 x_zero_point, i64 y_zero_point, i64 multiplier, i64 shift,
    i64 qmin, i64 qmax) {
    const i8* xc = x + i * S;
    int sum = 0;
    for (i64 s = 0; s < S; ++s) sum += xc[s] - (int)x_zero_point;
    return syn_requant(sum, multiplier, shift, y_zero_point, qmin, qmax);
}

extern "C" __global__ void global_avg_pool_v1(
    const i8* x, i8* y, i64 NC, i64 S,
    i64 x_zero_point, i64 y_zero_point, i64 multiplier, i64 shift, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, NC)
        y[i] = global_avg_pool_output(x, i, S, x_zero_point, y_zero_point, multiplier, shift,
                                      qmin, qmax);
}
