// conv.cu: conv1d, conv2d, conv3d (reference/conv.py), channels-first.
//
// Variants:
//   v1  naive: one thread per output element, the reduction over (input channel
//       of the group, kd, kh, kw) in ascending order, int32 accumulator.
//   v2  conv_v2, every rank: implicit GEMM (synapse_igemm.cuh) on the channels-first
//       input as it is (im2col gathered into shared memory, no copy), 64 x 64
//       output tiles, dp4a on k-quads; zero points folded into a per-channel
//       correction (corr, host-computed) and per-pixel input sums.
//   v3  conv_v3: v2's tiles and gathers, the product on tensor cores
//       (ldmatrix, mma.sync m16n8k32 s8, sm_80 and later), requantization fused
//       into the accumulator fragments. Below sm_80 it traps: never chosen there.
//   v4  conv2d_v4, depthwise (group = C, one input channel per output): a 16 x 16
//       output tile of one (sample, channel) plane per block, the input patch it
//       reads staged once in shared memory (padding as z_x), taps as w - z_w.
//   v5  conv_v5: v3 with cp.async double buffering (sm_80+): the weight rows,
//       contiguous in memory, are copied into the other shared buffer while this
//       step is multiplied (where K % 16 = 0; other rows go through registers as
//       in v3), the im2col gather stays register-staged. v3 is kept next to it, so
//       the benchmark shows what the asynchronous copy buys.
//   v6  conv_v6: channels-last (NHWC) input and output (the lowering's layout pass
//       converts at the edges of runs of NHWC-capable ops), k over (taps, channel)
//       so im2col reads are contiguous channels: 8-byte loads where C / group % 8
//       = 0, cp.async of whole columns for 1x1 convs. v5's core on sm_80+, v2's below.
//
// Every variant gives the v1 bits (exact int32 sums, same requantization);
// synapse_gpu/backends/cuda_variants.py chooses one per layer. Variants assume
// 256 threads per block (cuda_device.BLOCK).
// One N-d rule (conv_output, 3 spatial axes) serves all three ranks: conv2d is
// conv3d with D = KD = 1, conv1d also has H = KH = 1.
// Overflow: the core proves per output channel, at load, that
// sum |w - z_w| * max|x - z_x| + |bias| < 2^31, so the int32 accumulator is exact.
#include "synapse_int.cuh"
#include "synapse_igemm.cuh"

struct ConvArgs {
    const i8* x;             // (N, C, D, H, W)
    const i8* w;             // (M, C / group, KD, KH, KW)
    const int* bias;         // (M)
    const i64* multiplier;   // (M)
    const i64* shift;        // (M)
    const int* w_zero_point; // (M)
    i64 C, D, H, W, M, OD, OH, OW, KD, KH, KW;
    i64 stride_d, stride_h, stride_w, pad_d, pad_h, pad_w, dil_d, dil_h, dil_w, group;
    i64 x_zero_point, y_zero_point, qmin, qmax;
};

// Output element i of y (N, M, OD, OH, OW). Padding positions hold z_x and
// contribute (z_x - z_x) * w = 0, so they are skipped.
__host__ __device__ __forceinline__ i8 conv_output(const ConvArgs& a, i64 i) {
    const i64 ow = i % a.OW;
    i /= a.OW;
    const i64 oh = i % a.OH;
    i /= a.OH;
    const i64 od = i % a.OD;
    i /= a.OD;
    const i64 m = i % a.M;
    const i64 n = i / a.M;
    const i64 cg = a.C / a.group;
    const i64 c0 = m / (a.M / a.group) * cg;  // first input channel of m's group
    const i64 zw = a.w_zero_point[m];
    const i8* w = a.w + m * cg * a.KD * a.KH * a.KW;
    int acc = a.bias[m];
    for (i64 c = 0; c < cg; ++c) {
        const i8* xc = a.x + (n * a.C + c0 + c) * a.D * a.H * a.W;
        for (i64 kd = 0; kd < a.KD; ++kd) {
            const i64 id = od * a.stride_d - a.pad_d + kd * a.dil_d;
            for (i64 kh = 0; kh < a.KH; ++kh) {
                const i64 ih = oh * a.stride_h - a.pad_h + kh * a.dil_h;
                for (i64 kw = 0; kw < a.KW; ++kw) {
                    const i64 iw = ow * a.stride_w - a.pad_w + kw * a.dil_w;
                    if (id < 0 || id >= a.D || ih < 0 || ih >= a.H || iw < 0 || iw >= a.W) continue;
                    const i64 xv = xc[(id * a.H + ih) * a.W + iw];
                    const i64 wv = w[((c * a.KD + kd) * a.KH + kh) * a.KW + kw];
                    acc += (int)(xv - a.x_zero_point) * (int)(wv - zw);
                }
            }
        }
    }
    return syn_requant(acc, a.multiplier[m], a.shift[m], a.y_zero_point, a.qmin, a.qmax);
}

extern "C" __global__ void conv1d_v1(
    const i8* x, const i8* w, const int* bias, const i64* multiplier, const i64* shift,
    const int* w_zero_point, i8* y,
    i64 N, i64 C, i64 W, i64 M, i64 OW, i64 KW,
    i64 stride_w, i64 pad_w, i64 dil_w, i64 group,
    i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    const ConvArgs a = {x, w, bias, multiplier, shift, w_zero_point,
                        C, 1, 1, W, M, 1, 1, OW, 1, 1, KW,
                        1, 1, stride_w, 0, 0, pad_w, 1, 1, dil_w, group,
                        x_zero_point, y_zero_point, qmin, qmax};
    SYN_FOR_EACH_OUTPUT(i, N * M * OW) y[i] = conv_output(a, i);
}

// conv2d_v1's parameters and body (conv2d_v4 shares both: its host build is v1's).
#define SYN_CONV2D_PARAMS                                                                       \
    const i8* x, const i8* w, const int* bias, const i64* multiplier, const i64* shift,         \
    const int* w_zero_point, i8* y,                                                             \
    i64 N, i64 C, i64 H, i64 W, i64 M, i64 OH, i64 OW, i64 KH, i64 KW,                          \
    i64 stride_h, i64 stride_w, i64 pad_h, i64 pad_w, i64 dil_h, i64 dil_w, i64 group,          \
    i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax
#define SYN_CONV2D_V1                                                                           \
    const ConvArgs a = {x, w, bias, multiplier, shift, w_zero_point,                            \
                        C, 1, H, W, M, 1, OH, OW, 1, KH, KW,                                    \
                        1, stride_h, stride_w, 0, pad_h, pad_w, 1, dil_h, dil_w, group,         \
                        x_zero_point, y_zero_point, qmin, qmax};                                \
    SYN_FOR_EACH_OUTPUT(i, N * M * OH * OW) y[i] = conv_output(a, i)

extern "C" __global__ void conv2d_v1(SYN_CONV2D_PARAMS) { SYN_CONV2D_V1; }

extern "C" __global__ void conv3d_v1(
    const i8* x, const i8* w, const int* bias, const i64* multiplier, const i64* shift,
    const int* w_zero_point, i8* y,
    i64 N, i64 C, i64 D, i64 H, i64 W, i64 M, i64 OD, i64 OH, i64 OW, i64 KD, i64 KH, i64 KW,
    i64 stride_d, i64 stride_h, i64 stride_w, i64 pad_d, i64 pad_h, i64 pad_w,
    i64 dil_d, i64 dil_h, i64 dil_w, i64 group,
    i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    const ConvArgs a = {x, w, bias, multiplier, shift, w_zero_point,
                        C, D, H, W, M, OD, OH, OW, KD, KH, KW,
                        stride_d, stride_h, stride_w, pad_d, pad_h, pad_w,
                        dil_d, dil_h, dil_w, group,
                        x_zero_point, y_zero_point, qmin, qmax};
    SYN_FOR_EACH_OUTPUT(i, N * M * OD * OH * OW) y[i] = conv_output(a, i);
}

// ---------------------------------------------------------------- v2, v3, v5
// conv3d_v1's arguments, corr (synapse_igemm.cuh) in place of bias. One launch of
// group * ceil(M / group / 64) * ceil(N OD OH OW / 64) blocks.
#define SYN_CONV_GEMM_PARAMS                                                                    \
    const i8* x, const i8* w, const i64* corr, const i64* multiplier, const i64* shift,         \
    const int* w_zero_point, i8* y,                                                             \
    i64 N, i64 C, i64 D, i64 H, i64 W, i64 M, i64 OD, i64 OH, i64 OW, i64 KD, i64 KH, i64 KW,   \
    i64 stride_d, i64 stride_h, i64 stride_w, i64 pad_d, i64 pad_h, i64 pad_w,                  \
    i64 dil_d, i64 dil_h, i64 dil_w, i64 group,                                                 \
    i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax
#define SYN_CONV_GEMM(variant) SYN_CONV_GEMM_AS(ConvGemm, variant)
#define SYN_CONV_GEMM_AS(Geometry, variant)                                                     \
    const ConvGemm g0 = {x, w, C, D, H, W, M, OD, OH, OW, KD, KH, KW, stride_d, stride_h,        \
                        stride_w, pad_d, pad_h, pad_w, dil_d, dil_h, dil_w, C / group,          \
                        (i8)x_zero_point, (int)(M / group), (int)(C / group * KD * KH * KW),    \
                        (int)(N * OD * OH * OW), 0};                                            \
    const Geometry g = {g0};                                                                    \
    const Epilogue e = {corr, multiplier, shift, w_zero_point, y_zero_point, qmin, qmax};       \
    SYN_IGEMM(variant, g, e, y, (int)group)

extern "C" __global__ void conv_v2(SYN_CONV_GEMM_PARAMS) { SYN_CONV_GEMM(v2); }

extern "C" __global__ void conv_v3(SYN_CONV_GEMM_PARAMS) { SYN_CONV_GEMM(v3); }

extern "C" __global__ void conv_v5(SYN_CONV_GEMM_PARAMS) { SYN_CONV_GEMM(v5); }

// x (N, D, H, W, C) and y (N, OD, OH, OW, M) channels-last; otherwise conv_v5's arguments.
extern "C" __global__ void conv_v6(SYN_CONV_GEMM_PARAMS) { SYN_CONV_GEMM_AS(ConvNhwcGemm, v6); }

// ---------------------------------------------------------------- v4 (depthwise)

#define SYN_DW_TILE 16     // outputs per block: 16 x 16, one per thread
#define SYN_DW_PATCH 4096  // input bytes per tile; the lowering checks the patch fits
#define SYN_DW_TAPS 1024   // KH KW at most

// conv2d_v1's arguments; group = C and M = C * (M / C). One launch of
// N * M * ceil(OH / 16) * ceil(OW / 16) blocks.
extern "C" __global__ void conv2d_v4(SYN_CONV2D_PARAMS) {
#ifdef SYNAPSE_HOST_COMPAT  // one host thread: the v1 body (the tiling is device code)
    SYN_CONV2D_V1;
#else
    __shared__ i8 patch[SYN_DW_PATCH];
    __shared__ int taps[SYN_DW_TAPS];
    const int t = threadIdx.x, tw = (int)((OW + SYN_DW_TILE - 1) / SYN_DW_TILE);
    const int th = (int)((OH + SYN_DW_TILE - 1) / SYN_DW_TILE);
    const i64 b = blockIdx.x, nm = b / (tw * th);
    const int m = (int)(nm % M), c = m / (int)(M / C);
    const int oh0 = (int)(b / tw % th) * SYN_DW_TILE, ow0 = (int)(b % tw) * SYN_DW_TILE;
    // The patch covers this tile's outputs only (a partial edge tile reads less).
    const int rows = (int)syn_min(SYN_DW_TILE, OH - oh0), cols = (int)syn_min(SYN_DW_TILE, OW - ow0);
    const int PH = (rows - 1) * (int)stride_h + ((int)KH - 1) * (int)dil_h + 1;
    const int PW = (cols - 1) * (int)stride_w + ((int)KW - 1) * (int)dil_w + 1;
    const int ih0 = oh0 * (int)stride_h - (int)pad_h, iw0 = ow0 * (int)stride_w - (int)pad_w;
    const i8* xc = x + (nm / M * C + c) * H * W;
    for (int i = t; i < PH * PW; i += blockDim.x) {
        const int ih = ih0 + i / PW, iw = iw0 + i % PW;
        patch[i] = ih >= 0 && ih < H && iw >= 0 && iw < W ? xc[(i64)ih * W + iw] : (i8)x_zero_point;
    }
    const int zw = w_zero_point[m];
    for (int i = t; i < KH * KW; i += blockDim.x) taps[i] = w[(i64)m * KH * KW + i] - zw;
    __syncthreads();
    const int r = t / SYN_DW_TILE, q = t % SYN_DW_TILE;
    if (r < rows && q < cols) {
        int acc = bias[m];
        for (int kh = 0; kh < KH; ++kh) {
            const i8* row = patch + (r * (int)stride_h + kh * (int)dil_h) * PW + q * (int)stride_w;
            for (int kw = 0; kw < KW; ++kw)
                acc += (row[kw * (int)dil_w] - (int)x_zero_point) * taps[kh * KW + kw];
        }
        y[(nm * OH + oh0 + r) * OW + ow0 + q] =
            syn_requant(acc, multiplier[m], shift[m], y_zero_point, qmin, qmax);
    }
#endif
}
