// synapse_igemm.cuh: the int8 implicit-GEMM core of the conv and dense variants
// (conv.cu v2/v3, dense.cu v2/v3).
//
// Per group, C[m][p] = sum_k A[m][k] * B[k][p]: m an output channel (A: its weights,
// K contiguous), p an output pixel (conv: n, od, oh, ow; dense: a row of x), B read
// through a gather (conv: im2col of the channels-first input, no copy; dense: x^T).
// One block of 256 threads computes a 64 (m) x 64 (p) tile, k in steps of 32.
//
// Zero points: the raw int8 products are summed (dp4a / mma take int8 as is), and
//   sum_k (x - z_x)(w - z_w) = sum x w - z_w sum x - z_x sum w + K z_x z_w
// with padding positions gathered as z_x (so they contribute 0, as the reference
// skips them). The per-channel part, corr[m] = bias - z_x sum_k w + K z_x z_w, is
// computed by the host (lowering); sum x per pixel comes from the B tiles. Every
// step wraps modulo 2^32 (unsigned arithmetic, dp4a and mma wrap the same way);
// the true sum is below 2^31 (the load-time proof), so the wrapped one is exact
// whatever the tile order.
//
// Requires K < 2^31 and pixels < 2^31 (tile coordinates are 32-bit); the lowering
// falls back to v1 otherwise.
#ifndef SYNAPSE_IGEMM_CUH
#define SYNAPSE_IGEMM_CUH

// Included after synapse_int.cuh (i64, i8, syn_requant): the loader inlines each
// header once per include chain, so this one does not include it again.

typedef unsigned int u32;

#define SYN_TM 64   // output channels per block tile
#define SYN_TP 64   // output pixels per block tile
#define SYN_TK 32   // k per step

// A gather: Geom::a(grp, m, k) is the weight (m < Mg, k < K in range), Geom::Col
// the per-pixel state of the B gather, Geom::b(col, k) its value at k < K and
// Geom::b8(col, k, v) the 8 values from k (0 past K), Geom::out(col, m) the output
// index. Out-of-range m and p read as 0.

// Conv, channels-first, 1 to 3 spatial axes (unit leading ones), as ConvArgs.
struct ConvGemm {
    const i8* x;
    const i8* w;
    i64 C, D, H, W, M, OD, OH, OW, KD, KH, KW;
    i64 sd, sh, sw, pd, ph, pw, dd, dh, dw, group;
    i8 zx;
    int Mg, K, P;  // channels per group, reduction length, pixels (N OD OH OW)

    struct Col {
        const i8* x;  // the pixel's sample and group, channel 0; null past the last pixel
        int id0, ih0, iw0;
        i64 out;      // y index of channel 0
    };
    __host__ __device__ __forceinline__ i8 a(int grp, int m, int k) const {
        return w[((i64)grp * Mg + m) * K + k];
    }
    __host__ __device__ __forceinline__ Col col(int grp, int p) const {
        Col c = {nullptr, 0, 0, 0, 0};
        if (p >= P) return c;
        const int ow = p % (int)OW, oh = p / (int)OW % (int)OH, od = p / (int)(OW * OH) % (int)OD;
        const i64 n = p / (OW * OH * OD), cg = C / group;
        c.x = x + (n * C + grp * cg) * D * H * W;
        c.id0 = od * (int)sd - (int)pd, c.ih0 = oh * (int)sh - (int)ph, c.iw0 = ow * (int)sw - (int)pw;
        c.out = (n * M + (i64)grp * Mg) * OD * OH * OW + (p % (int)(OW * OH * OD));
        return c;
    }
    __host__ __device__ __forceinline__ i8 at(const Col& c, int ch, int kd, int kh, int kw) const {
        const int id = c.id0 + kd * (int)dd, ih = c.ih0 + kh * (int)dh, iw = c.iw0 + kw * (int)dw;
        if (id < 0 || id >= D || ih < 0 || ih >= H || iw < 0 || iw >= W) return zx;
        return c.x[((ch * D + id) * H + ih) * W + iw];
    }
    __host__ __device__ __forceinline__ i8 b(const Col& c, int k) const {
        return at(c, k / (int)(KW * KH * KD), k / (int)(KW * KH) % (int)KD, k / (int)KW % (int)KH,
                  k % (int)KW);
    }
    // One index decode for the run, then (c, kd, kh, kw) steps like an odometer.
    __host__ __device__ __forceinline__ void b8(const Col& c, int k, i8* v) const {
        int kw = k % (int)KW, r = k / (int)KW;
        int kh = r % (int)KH;
        r /= (int)KH;
        int kd = r % (int)KD, ch = r / (int)KD;
        for (int j = 0; j < 8; ++j) {
            v[j] = k + j < K ? at(c, ch, kd, kh, kw) : (i8)0;
            if (++kw == KW) {
                kw = 0;
                if (++kh == KH) {
                    kh = 0;
                    if (++kd == KD) kd = 0, ++ch;
                }
            }
        }
    }
    __host__ __device__ __forceinline__ i64 out(const Col& c, int m) const {
        return c.out + (i64)m * OD * OH * OW;
    }
};

// Dense: y[r, j] over x (rows, K) and W (K, M) (w stored (M, K) if trans_w).
struct DenseGemm {
    const i8* x;
    const i8* w;
    i64 trans_w;
    int Mg, K, P;  // output features, reduction length, rows

    struct Col {
        const i8* x;  // the row; null past the last row
        i64 out;
    };
    __host__ __device__ __forceinline__ i8 a(int, int m, int k) const {
        return trans_w ? w[(i64)m * K + k] : w[(i64)k * Mg + m];
    }
    __host__ __device__ __forceinline__ Col col(int, int p) const {
        Col c = {nullptr, 0};
        if (p < P) c.x = x + (i64)p * K, c.out = (i64)p * Mg;
        return c;
    }
    __host__ __device__ __forceinline__ i8 b(const Col& c, int k) const { return c.x[k]; }
    __host__ __device__ __forceinline__ void b8(const Col& c, int k, i8* v) const {
        for (int j = 0; j < 8; ++j) v[j] = k + j < K ? c.x[k + j] : (i8)0;
    }
    __host__ __device__ __forceinline__ i64 out(const Col& c, int m) const { return c.out + m; }
};

// The epilogue of one output: corrected sum, requantized (synapse_int.cuh).
struct Epilogue {
    const i64* corr;  // per global channel, already reduced modulo 2^32
    const i64* multiplier;
    const i64* shift;
    const int* w_zero_point;
    i64 y_zero_point, qmin, qmax;

    __host__ __device__ __forceinline__ i8 operator()(int ch, u32 dot, u32 sum_x) const {
        const int acc = (int)((u32)corr[ch] + dot - (u32)w_zero_point[ch] * sum_x);
        return syn_requant(acc, multiplier[ch], shift[ch], y_zero_point, qmin, qmax);
    }
};

__host__ __device__ __forceinline__ u32 syn_pack4(i8 b0, i8 b1, i8 b2, i8 b3) {
    return (u32)(unsigned char)b0 | (u32)(unsigned char)b1 << 8 | (u32)(unsigned char)b2 << 16 |
           (u32)(unsigned char)b3 << 24;
}

// Bytes k..k+7 of A's row m and of B's column c as two words each, 0 past K, Mg, P.
template <class G>
__host__ __device__ __forceinline__ void syn_a8(const G& g, int grp, int m, int k, u32* a) {
    i8 v[8];
    for (int j = 0; j < 8; ++j) v[j] = m < g.Mg && k + j < g.K ? g.a(grp, m, k + j) : (i8)0;
    a[0] = syn_pack4(v[0], v[1], v[2], v[3]), a[1] = syn_pack4(v[4], v[5], v[6], v[7]);
}

template <class G>
__host__ __device__ __forceinline__ void syn_b8(const G& g, const typename G::Col& c, int k, u32* b) {
    i8 v[8] = {};
    if (c.x) g.b8(c, k, v);
    b[0] = syn_pack4(v[0], v[1], v[2], v[3]), b[1] = syn_pack4(v[4], v[5], v[6], v[7]);
}

#ifdef SYNAPSE_HOST_COMPAT
// The host build (host_compat.h: one thread, no shared memory) checks the same
// gathers and the zero-point algebra output by output; the tiled bodies below
// are device code.
template <class G>
void syn_igemm_host(const G& g, const Epilogue& e, i8* y, int groups) {
    for (int grp = 0; grp < groups; ++grp)
        for (int p = 0; p < g.P; ++p) {
            const typename G::Col c = g.col(grp, p);
            for (int m = 0; m < g.Mg; ++m) {
                u32 dot = 0, sx = 0;
                for (int k = 0; k < g.K; ++k) {
                    dot += (u32)((int)g.a(grp, m, k) * (int)g.b(c, k));
                    sx += (u32)(int)g.b(c, k);
                }
                y[g.out(c, m)] = e(grp * g.Mg + m, dot, sx);
            }
        }
}
#else
#include "synapse_warp.cuh"

// Tile (grp, m0, p0) of block b: pixel tiles fastest.
struct SynTile {
    int grp, m0, p0;
};
template <class G>
__device__ __forceinline__ SynTile syn_tile(const G& g) {
    const int pt = (g.P + SYN_TP - 1) / SYN_TP, mt = (g.Mg + SYN_TM - 1) / SYN_TM;
    const int b = blockIdx.x;
    return {b / (pt * mt), b / pt % mt * SYN_TM, b % pt * SYN_TP};
}

// Both tiled bodies: each thread loads 8 k-bytes of A's row t / 4 (4 threads
// read 32 contiguous weight bytes) and of B's column t % 64. Double-buffered: the
// next step's bytes are loaded into registers while this step's tiles are
// multiplied, then stored to the other buffer; one barrier per step.
struct SynLoad {
    u32 a[2], b[2];
};
template <class G>
__device__ __forceinline__ SynLoad syn_load(const G& g, const SynTile& T, const typename G::Col& c,
                                           int k0) {
    const int t = threadIdx.x;
    SynLoad l;
    syn_a8(g, T.grp, T.m0 + t / 4, k0 + t % 4 * 8, l.a);
    syn_b8(g, c, k0 + t / SYN_TP * 8, l.b);
    return l;
}

// v2: 16 x 16 threads, each a 4 (m) x 4 (p) block of outputs; tiles hold k-quads
// (4 int8 in a word) so one dp4a takes a word of A and a word of B. Thread p < 64
// also sums B's column p (sum x of pixel p) with a dp4a against 1,1,1,1.
template <class G>
__device__ __forceinline__ void syn_igemm_v2(const G& g, const Epilogue& e, i8* y) {
    __shared__ u32 As[2][SYN_TK / 4][SYN_TM];
    __shared__ u32 Bs[2][SYN_TK / 4][SYN_TP];
    __shared__ u32 colsum[SYN_TP];
    const SynTile T = syn_tile(g);
    const int t = threadIdx.x, tm = t / 16 * 4, tp = t % 16 * 4;
    const typename G::Col lc = g.col(T.grp, T.p0 + t % SYN_TP);
    u32 acc[4][4] = {};
    u32 sx = 0;
    SynLoad l = syn_load(g, T, lc, 0);
    for (int k0 = 0, buf = 0; k0 < g.K; k0 += SYN_TK, buf ^= 1) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            As[buf][t % 4 * 2 + h][t / 4] = l.a[h];
            Bs[buf][t / SYN_TP * 2 + h][t % SYN_TP] = l.b[h];
        }
        __syncthreads();
        if (k0 + SYN_TK < g.K) l = syn_load(g, T, lc, k0 + SYN_TK);
#pragma unroll
        for (int q = 0; q < SYN_TK / 4; ++q) {
            u32 a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[buf][q][tm + i], b[i] = Bs[buf][q][tp + i];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = (u32)__dp4a((int)a[i], (int)b[j], (int)acc[i][j]);
        }
        if (t < SYN_TP)
#pragma unroll
            for (int q = 0; q < SYN_TK / 4; ++q) sx = (u32)__dp4a((int)Bs[buf][q][t], 0x01010101, (int)sx);
    }
    if (t < SYN_TP) colsum[t] = sx;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const typename G::Col c = g.col(T.grp, T.p0 + tp + j);
        if (!c.x) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = T.m0 + tm + i;
            if (m < g.Mg) y[g.out(c, m)] = e(T.grp * g.Mg + m, acc[i][j], colsum[tp + j]);
        }
    }
}

// v3: tensor cores. 8 warps as 2 (m) x 4 (p); warp (wm, wp) computes rows
// 32 wm .. +31 and pixels 16 wp .. +15 of the tile as 2 x 2 mma.sync m16n8k32.
// Tiles hold rows of 32 k bytes, A by channel (row-major A) and B by pixel
// (column-major B), padded to 48 bytes: 16-byte aligned rows for ldmatrix and
// the 8 rows of one 8x8 matrix on distinct banks (48 / 4 = 12 banks apart).
#define SYN_ROW 48
template <class G>
__device__ __forceinline__ void syn_igemm_v3(const G& g, const Epilogue& e, i8* y) {
    __shared__ __align__(16) unsigned char As[2][SYN_TM][SYN_ROW];
    __shared__ __align__(16) unsigned char Bs[2][SYN_TP][SYN_ROW];
    __shared__ u32 colsum[SYN_TP];
    const SynTile T = syn_tile(g);
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const int wm = warp / 4 * 32, wp = warp % 4 * 16;
    const typename G::Col lc = g.col(T.grp, T.p0 + t % SYN_TP);
    int acc[2][2][4] = {};
    u32 sx = 0;
    SynLoad l = syn_load(g, T, lc, 0);
    for (int k0 = 0, buf = 0; k0 < g.K; k0 += SYN_TK, buf ^= 1) {
        u32* ad = reinterpret_cast<u32*>(&As[buf][t / 4][t % 4 * 8]);
        u32* bd = reinterpret_cast<u32*>(&Bs[buf][t % SYN_TP][t / SYN_TP * 8]);
        ad[0] = l.a[0], ad[1] = l.a[1], bd[0] = l.b[0], bd[1] = l.b[1];
        __syncthreads();
        if (k0 + SYN_TK < g.K) l = syn_load(g, T, lc, k0 + SYN_TK);
        // ldmatrix x4: lane 8 j + i names row i of 8x8 b16 matrix j. A fragment
        // (PTX ISA m16n8k32 .s8): a[r] = rows 8 (r & 1) .., bytes 16 (r >> 1) ..;
        // B fragment of pixel block n: b[r] = pixels 8 n .., bytes 16 r ...
        const int j = lane / 8, i = lane % 8;
        u32 a[2][4], b[4];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
            syn_ldmatrix_x4(a[mi], &As[buf][wm + 16 * mi + 8 * (j & 1) + i][16 * (j >> 1)]);
        syn_ldmatrix_x4(b, &Bs[buf][wp + 8 * (j >> 1) + i][16 * (j & 1)]);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < 2; ++ni) syn_mma_m16n8k32_s8(acc[mi][ni], a[mi], b + 2 * ni, acc[mi][ni]);
        if (t < SYN_TP)
#pragma unroll
            for (int q = 0; q < SYN_TK / 4; ++q)
                sx = (u32)__dp4a(*reinterpret_cast<const int*>(&Bs[buf][t][4 * q]), 0x01010101, (int)sx);
    }
    if (t < SYN_TP) colsum[t] = sx;
    __syncthreads();
    // Fused epilogue; accumulator fragment: c[r] = C[g + 8 (r >> 1)][2 q + (r & 1)],
    // g = lane / 4, q = lane % 4.
#pragma unroll
    for (int ni = 0; ni < 2; ++ni)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int p = wp + 8 * ni + 2 * (lane % 4) + (r & 1);
            const typename G::Col c = g.col(T.grp, T.p0 + p);
            if (!c.x) continue;
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const int m = T.m0 + wm + 16 * mi + lane / 4 + 8 * (r >> 1);
                if (m < g.Mg) y[g.out(c, m)] = e(T.grp * g.Mg + m, (u32)acc[mi][ni][r], colsum[p]);
            }
        }
}
#endif  // SYNAPSE_HOST_COMPAT

// A kernel's body: the tiled variant on a device, the output-by-output loop on the host.
#ifdef SYNAPSE_HOST_COMPAT
#define SYN_IGEMM(variant, g, e, y, groups) syn_igemm_host(g, e, y, groups)
#else
#define SYN_IGEMM(variant, g, e, y, groups) syn_igemm_##variant(g, e, y)
#endif

#endif  // SYNAPSE_IGEMM_CUH
