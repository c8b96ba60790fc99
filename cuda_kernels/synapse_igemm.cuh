// synapse_igemm.cuh: the int8 implicit-GEMM core of the conv, dense and matmul
// variants (conv.cu, dense.cu: v2, v3, v5).
//
// Per group, C[m][p] = sum_k A[m][k] * B[k][p]: m a GEMM row (conv: an output
// channel, A its weights; dense: an output feature; matmul: a row of a), p a GEMM
// column (conv: an output pixel n, od, oh, ow; dense: a row of x; matmul: a column
// of b), B read through a gather (conv: im2col of the channels-first input, no
// copy). Groups: conv's groups, matmul's batch matrices. One block of 256 threads
// computes a 64 (m) x 64 (p) tile, k in steps of 32.
//
// Zero points: the raw int8 products are summed (dp4a / mma take int8 as is), and
//   sum_k (a - z_a)(b - z_b) = sum a b - z_b sum a - z_a sum b + K z_a z_b
// with padding positions gathered as the input's zero point (so they contribute 0,
// as the reference skips them). The epilogue gets the column sums of B (and, for
// matmul, the row sums of A) from the tiles; conv/dense fold the rest per channel
// into corr = bias - z_x sum_k w + K z_x z_w (host-computed). Every step wraps
// modulo 2^32 (unsigned arithmetic, dp4a and mma wrap the same way); the true sum
// is below 2^31 (the load-time proof), so the wrapped one is exact whatever the
// tile order.
//
// Requires K, rows and columns < 2^31 (tile coordinates are 32-bit); the lowering
// falls back to v1 otherwise.
#ifndef SYNAPSE_IGEMM_CUH
#define SYNAPSE_IGEMM_CUH

// Included after synapse_int.cuh (i64, i8, syn_requant): the loader inlines each
// header once per include chain, so this one does not include it again.

typedef unsigned int u32;

#define SYN_TM 64   // GEMM rows per block tile
#define SYN_TP 64   // GEMM columns per block tile
#define SYN_TK 32   // k per step

// A geometry G: g.group(grp) the geometry of one group (its bases offset; once per
// block); then g.a(m, k) A's element (m < Mg, k < K), G::Col the per-column state
// of the B gather (x null past the last column), g.col(p) it, g.b8(col, k, v) the
// 8 values of B's column from k (0 past K), g.out(col, m) the output index,
// g.a_run(m) / g.b_run(col) the address of A's row / B's column where its K bytes
// are contiguous (cp.async reads those, v5), else null.

// Conv, channels-first, 1 to 3 spatial axes (unit leading ones), as ConvArgs.
struct ConvGemm {
    const i8* x;  // group(): the group's channel 0
    const i8* w;  // group(): the group's first filter
    i64 C, D, H, W, M, OD, OH, OW, KD, KH, KW;
    i64 sd, sh, sw, pd, ph, pw, dd, dh, dw, cg;  // cg: input channels per group
    i8 zx;
    int Mg, K, P;  // channels per group, reduction length, pixels (N OD OH OW)
    i64 y0;        // group(): y index of the group's channel 0

    struct Col {
        const i8* x;  // the pixel's sample; null past the last pixel
        int id0, ih0, iw0;
        i64 out;      // y index of channel 0
    };
    __host__ __device__ __forceinline__ ConvGemm group(int grp) const {
        ConvGemm g = *this;
        g.x += (i64)grp * cg * D * H * W, g.w += (i64)grp * Mg * K;
        g.y0 = (i64)grp * Mg * OD * OH * OW;
        return g;
    }
    __host__ __device__ __forceinline__ i8 a(int m, int k) const { return w[(i64)m * K + k]; }
    __host__ __device__ __forceinline__ const i8* a_run(int m) const { return w + (i64)m * K; }
    __host__ __device__ __forceinline__ Col col(int p) const {
        Col c = {nullptr, 0, 0, 0, 0};
        if (p >= P) return c;
        const int ow = p % (int)OW, oh = p / (int)OW % (int)OH, od = p / (int)(OW * OH) % (int)OD;
        const i64 n = p / (OW * OH * OD);
        c.x = x + n * C * D * H * W;
        c.id0 = od * (int)sd - (int)pd, c.ih0 = oh * (int)sh - (int)ph, c.iw0 = ow * (int)sw - (int)pw;
        c.out = y0 + n * M * OD * OH * OW + (p % (int)(OW * OH * OD));
        return c;
    }
    __host__ __device__ __forceinline__ const i8* b_run(const Col&) const { return nullptr; }
    __host__ __device__ __forceinline__ i8 at(const Col& c, int ch, int kd, int kh, int kw) const {
        const int id = c.id0 + kd * (int)dd, ih = c.ih0 + kh * (int)dh, iw = c.iw0 + kw * (int)dw;
        if (id < 0 || id >= D || ih < 0 || ih >= H || iw < 0 || iw >= W) return zx;
        return c.x[((ch * D + id) * H + ih) * W + iw];
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

// Conv, channels-last (v6): x (N, D, H, W, C), y (N, OD, OH, OW, M), the same
// fields as ConvGemm. k runs over (kd, kh, kw, channel of the group), channel
// fastest, so 8 k-bytes of one tap are 8 contiguous input bytes where cg % 8 = 0
// (one 8-byte load), and a 1x1 conv's column is one contiguous run (cp.async). The
// weights stay (M, cg, KD, KH, KW): a(m, k) permutes k (a_run only for 1x1 taps).
struct ConvNhwcGemm : ConvGemm {
    __host__ __device__ __forceinline__ ConvNhwcGemm group(int grp) const {
        ConvNhwcGemm g = *this;
        g.x += (i64)grp * cg, g.w += (i64)grp * Mg * K, g.y0 = (i64)grp * Mg;
        return g;
    }
    __host__ __device__ __forceinline__ int taps() const { return K / (int)cg; }
    __host__ __device__ __forceinline__ i8 a(int m, int k) const {
        return w[(i64)m * K + (i64)(k % (int)cg) * taps() + k / (int)cg];
    }
    __host__ __device__ __forceinline__ const i8* a_run(int m) const {
        return taps() == 1 ? w + (i64)m * K : nullptr;
    }
    __host__ __device__ __forceinline__ Col col(int p) const {
        Col c = ConvGemm::col(p);  // the sample's base is the same in both layouts
        if (c.x) c.out = y0 + (i64)p * M;
        return c;
    }
    // The tap's channel 0 of c's pixel, null where the tap falls in the padding.
    __host__ __device__ __forceinline__ const i8* tap(const Col& c, int t) const {
        const int kw = t % (int)KW, kh = t / (int)KW % (int)KH, kd = t / (int)(KW * KH);
        const int id = c.id0 + kd * (int)dd, ih = c.ih0 + kh * (int)dh, iw = c.iw0 + kw * (int)dw;
        if (id < 0 || id >= D || ih < 0 || ih >= H || iw < 0 || iw >= W) return nullptr;
        return c.x + ((i64)(id * H + ih) * W + iw) * C;
    }
    __host__ __device__ __forceinline__ const i8* b_run(const Col& c) const {
        return taps() == 1 ? tap(c, 0) : nullptr;
    }
    __host__ __device__ __forceinline__ void b8(const Col& c, int k, i8* v) const {
        int t = k / (int)cg, ch = k % (int)cg;
        const i8* px = tap(c, t);
        if (cg % 8 == 0 && k + 8 <= K && (!px || reinterpret_cast<unsigned long long>(px + ch) % 8 == 0)) {
            // the 8 bytes are channels ch .. ch + 7 of one tap: one load (or 8 z_x)
            unsigned long long u = 0x0101010101010101ull * (unsigned char)zx;
            if (px) u = *reinterpret_cast<const unsigned long long*>(px + ch);
            for (int j = 0; j < 8; ++j) v[j] = (i8)(u >> 8 * j);
            return;
        }
        for (int j = 0; j < 8; ++j) {
            v[j] = k + j < K ? (px ? px[ch] : zx) : (i8)0;
            if (++ch == cg) ch = 0, px = tap(c, ++t);
        }
    }
    __host__ __device__ __forceinline__ i64 out(const Col& c, int m) const { return c.out + m; }
};

// GEMM columns that are rows of a row-major (P, K) matrix x: dense's input.
struct RowsB {
    const i8* x;
    int K, P;

    struct Col {
        const i8* x;  // the row; null past the last row
        i64 out;
    };
    __host__ __device__ __forceinline__ Col col(int p) const {
        Col c = {nullptr, 0};
        if (p < P) c.x = x + (i64)p * K, c.out = p;
        return c;
    }
    __host__ __device__ __forceinline__ const i8* b_run(const Col& c) const { return c.x; }
    __host__ __device__ __forceinline__ void b8(const Col& c, int k, i8* v) const {
        for (int j = 0; j < 8; ++j) v[j] = k + j < K ? c.x[k + j] : (i8)0;
    }
};

// Dense: y[r, j] over x (rows, K) and W (K, M) (w stored (M, K) if trans_w).
struct DenseGemm : RowsB {
    const i8* w;
    i64 trans_w;
    int Mg;  // output features

    __host__ __device__ __forceinline__ DenseGemm group(int) const { return *this; }
    __host__ __device__ __forceinline__ i8 a(int m, int k) const {
        return trans_w ? w[(i64)m * K + k] : w[(i64)k * Mg + m];
    }
    __host__ __device__ __forceinline__ const i8* a_run(int m) const {
        return trans_w ? w + (i64)m * K : nullptr;
    }
    __host__ __device__ __forceinline__ i64 out(const Col& c, int m) const { return c.out * Mg + m; }
};

// Matmul: per batch matrix, y (Mg, P) = a (Mg, K) b (K, P); meta as matmul_v1's.
struct MatmulGemm {
    const i8* a_;  // group(): the batch's matrices
    const i8* b_;
    const i64* meta;
    i64 rank;
    int Mg, K, P;
    i64 y0;  // group(): y index of the batch's matrix

    struct Col {
        const i8* x;  // b's column; null past the last column
        i64 out;
    };
    __host__ __device__ __forceinline__ MatmulGemm group(int grp) const {
        MatmulGemm g = *this;
        g.a_ += syn_offset(grp, rank, meta, meta + rank);
        g.b_ += syn_offset(grp, rank, meta, meta + 2 * rank);
        g.y0 = (i64)grp * Mg * P;
        return g;
    }
    __host__ __device__ __forceinline__ i8 a(int m, int k) const { return a_[(i64)m * K + k]; }
    __host__ __device__ __forceinline__ const i8* a_run(int m) const { return a_ + (i64)m * K; }
    __host__ __device__ __forceinline__ Col col(int p) const {
        Col c = {nullptr, 0};
        if (p < P) c.x = b_ + p, c.out = y0 + p;
        return c;
    }
    __host__ __device__ __forceinline__ const i8* b_run(const Col&) const { return nullptr; }
    __host__ __device__ __forceinline__ void b8(const Col& c, int k, i8* v) const {
        for (int j = 0; j < 8; ++j) v[j] = k + j < K ? c.x[(i64)(k + j) * P] : (i8)0;
    }
    __host__ __device__ __forceinline__ i64 out(const Col& c, int m) const { return c.out + (i64)m * P; }
};

// Epilogues: one output from its raw dot product and the sums of its A row and B
// column (sum_a only where ROW_SUMS), requantized (synapse_int.cuh).
struct Epilogue {  // conv, dense: per output channel
    static const bool ROW_SUMS = false;
    const i64* corr;  // per global channel, already reduced modulo 2^32
    const i64* multiplier;
    const i64* shift;
    const int* w_zero_point;
    i64 y_zero_point, qmin, qmax;

    __host__ __device__ __forceinline__ i8 operator()(int ch, u32 dot, u32, u32 sum_b) const {
        const int acc = (int)((u32)corr[ch] + dot - (u32)w_zero_point[ch] * sum_b);
        return syn_requant(acc, multiplier[ch], shift[ch], y_zero_point, qmin, qmax);
    }
};

struct MatmulEpilogue {  // per tensor
    static const bool ROW_SUMS = true;
    i64 K, a_zero_point, b_zero_point, y_zero_point, multiplier, shift, qmin, qmax;

    __host__ __device__ __forceinline__ i8 operator()(int, u32 dot, u32 sum_a, u32 sum_b) const {
        const u32 za = (u32)a_zero_point, zb = (u32)b_zero_point;
        const int acc = (int)(dot - zb * sum_a - za * sum_b + (u32)K * za * zb);
        return syn_requant(acc, multiplier, shift, y_zero_point, qmin, qmax);
    }
};

__host__ __device__ __forceinline__ u32 syn_pack4(const i8* v) {
    return (u32)(unsigned char)v[0] | (u32)(unsigned char)v[1] << 8 | (u32)(unsigned char)v[2] << 16 |
           (u32)(unsigned char)v[3] << 24;
}

// Bytes k..k+7 of A's row m and of B's column c as two words each, 0 past K, Mg, P.
template <class G>
__host__ __device__ __forceinline__ void syn_a8(const G& g, int m, int k, u32* a) {
    i8 v[8];
    for (int j = 0; j < 8; ++j) v[j] = m < g.Mg && k + j < g.K ? g.a(m, k + j) : (i8)0;
    a[0] = syn_pack4(v), a[1] = syn_pack4(v + 4);
}

template <class G>
__host__ __device__ __forceinline__ void syn_b8(const G& g, const typename G::Col& c, int k, u32* b) {
    i8 v[8] = {};
    if (c.x) g.b8(c, k, v);
    b[0] = syn_pack4(v), b[1] = syn_pack4(v + 4);
}

#ifdef SYNAPSE_HOST_COMPAT
// The host build (host_compat.h: one thread, no shared memory) checks the same
// gathers and the zero-point algebra output by output; the tiled bodies below
// are device code.
template <class G, class E>
void syn_igemm_host(const G& g0, const E& e, i8* y, int groups) {
    for (int grp = 0; grp < groups; ++grp) {
        const G g = g0.group(grp);
        for (int p = 0; p < g.P; ++p) {
            const typename G::Col c = g.col(p);
            for (int m = 0; m < g.Mg; ++m) {
                u32 dot = 0, sa = 0, sb = 0;
                for (int k = 0; k < g.K; k += 8) {
                    u32 a[2], b[2];
                    syn_a8(g, m, k, a), syn_b8(g, c, k, b);
                    for (int j = 0; j < 8; ++j) {
                        const int av = (i8)(a[j / 4] >> 8 * (j % 4)), bv = (i8)(b[j / 4] >> 8 * (j % 4));
                        dot += (u32)(av * bv), sa += (u32)av, sb += (u32)bv;
                    }
                }
                y[g.out(c, m)] = e(grp * g.Mg + m, dot, sa, sb);
            }
        }
    }
}
#else
#include "synapse_warp.cuh"
#include "synapse_async.cuh"

// Tile (grp, m0, p0) of block b: column tiles fastest.
struct SynTile {
    int grp, m0, p0;
};
template <class G>
__device__ __forceinline__ SynTile syn_tile(const G& g) {
    const int pt = (g.P + SYN_TP - 1) / SYN_TP, mt = (g.Mg + SYN_TM - 1) / SYN_TM;
    const int b = blockIdx.x;
    return {b / (pt * mt), b / pt % mt * SYN_TM, b % pt * SYN_TP};
}

// The row and column sums the epilogue needs, summed by threads 0..63 (B column
// t) and, where E::ROW_SUMS, 64..127 (A row t - 64), one step at a time: the 8
// words of k-quads from a (the A row) or b (the B column), stride apart.
struct SynSums {
    u32 row[SYN_TM], col[SYN_TP];
};
template <class E>
__device__ __forceinline__ void syn_sum_step(u32& s, const u32* a, const u32* b, int stride) {
    const int t = threadIdx.x;
    const u32* w = t < SYN_TP ? b : E::ROW_SUMS && t < SYN_TP + SYN_TM ? a : nullptr;
    if (w)
#pragma unroll
        for (int q = 0; q < SYN_TK / 4; ++q) s = (u32)__dp4a((int)w[q * stride], 0x01010101, (int)s);
}
__device__ __forceinline__ void syn_sums_publish(SynSums& S, u32 s) {
    const int t = threadIdx.x;
    if (t < SYN_TP) S.col[t] = s;
    else if (t < SYN_TP + SYN_TM) S.row[t - SYN_TP] = s;
    __syncthreads();
}

// Output (m, p) of the tile (local coordinates), c the column p's state.
template <class G, class E>
__device__ __forceinline__ void syn_put(const G& g, const E& e, const SynTile& T, const SynSums& S,
                                        i8* y, const typename G::Col& c, int m, int p, u32 dot) {
    if (c.x && T.m0 + m < g.Mg)
        y[g.out(c, T.m0 + m)] = e(T.grp * g.Mg + T.m0 + m, dot, S.row[m], S.col[p]);
}

// v2, v3 staging: each thread loads 8 k-bytes of A's row t / 4 (4 threads read 32
// contiguous weight bytes) and of B's column t % 64 into registers; they are
// stored to shared memory at the next step. Double-buffered: the next step's bytes
// are loaded while this step's tiles are multiplied; one barrier per step.
struct SynLoad {
    u32 a[2], b[2];
};
template <class G>
__device__ __forceinline__ SynLoad syn_load(const G& g, const SynTile& T, const typename G::Col& c,
                                           int k0) {
    const int t = threadIdx.x;
    SynLoad l;
    syn_a8(g, T.m0 + t / 4, k0 + t % 4 * 8, l.a);
    syn_b8(g, c, k0 + t / SYN_TP * 8, l.b);
    return l;
}

// v2: 16 x 16 threads, each a 4 (m) x 4 (p) block of outputs; tiles hold k-quads
// (4 int8 in a word) so one dp4a takes a word of A and a word of B.
template <class G, class E>
__device__ __forceinline__ void syn_igemm_v2(const G& g0, const E& e, i8* y) {
    __shared__ u32 As[2][SYN_TK / 4][SYN_TM];
    __shared__ u32 Bs[2][SYN_TK / 4][SYN_TP];
    __shared__ SynSums S;
    const SynTile T = syn_tile(g0);
    const G g = g0.group(T.grp);
    const int t = threadIdx.x, tm = t / 16 * 4, tp = t % 16 * 4;
    const typename G::Col lc = g.col(T.p0 + t % SYN_TP);
    u32 acc[4][4] = {};
    u32 s = 0;
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
        syn_sum_step<E>(s, &As[buf][0][t % SYN_TM], &Bs[buf][0][t % SYN_TP], SYN_TM);
    }
    syn_sums_publish(S, s);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const typename G::Col c = g.col(T.p0 + tp + j);
#pragma unroll
        for (int i = 0; i < 4; ++i) syn_put(g, e, T, S, y, c, tm + i, tp + j, acc[i][j]);
    }
}

// v3, v5: tensor cores. Tiles hold rows of 32 k bytes, A by row (row-major A) and
// B by column (column-major B), padded to 48 bytes: 16-byte aligned rows for
// ldmatrix and cp.async, and the 8 rows of one 8x8 matrix on distinct banks
// (48 / 4 = 12 banks apart).
#define SYN_ROW 48
typedef unsigned char SynRows[SYN_TM][SYN_ROW];

// v3 staging: SynLoad's bytes, stored as 8-byte pieces of the rows.
template <class G>
struct SynStageV3 {
    const G& g;
    const SynTile& T;
    typename G::Col c;
    SynLoad l;

    __device__ __forceinline__ SynStageV3(const G& g_, const SynTile& T_, SynRows&, SynRows&)
        : g(g_), T(T_) {
        c = g.col(T.p0 + threadIdx.x % SYN_TP);
        l = syn_load(g, T, c, 0);
    }
    __device__ __forceinline__ void store(SynRows& As, SynRows& Bs) const {
        const int t = threadIdx.x;
        u32* ad = reinterpret_cast<u32*>(&As[t / 4][t % 4 * 8]);
        u32* bd = reinterpret_cast<u32*>(&Bs[t % SYN_TP][t / SYN_TP * 8]);
        ad[0] = l.a[0], ad[1] = l.a[1], bd[0] = l.b[0], bd[1] = l.b[1];
    }
    __device__ __forceinline__ void wait() const {}
    __device__ __forceinline__ void fetch(int k0, SynRows&, SynRows&) { l = syn_load(g, T, c, k0); }
};

// v5 staging: 16-byte pieces, thread t < 128 A's row t / 2, the others B's column
// (t - 128) / 2, bytes 16 (t % 2) ... A piece whose row (column) is contiguous in
// memory and 16-byte aligned (K % 16 = 0) is copied by cp.async straight into the
// other buffer while this step is multiplied (zero-filled past K and past the last
// row or column); any other piece is gathered into registers as in v3.
template <class G>
struct SynStageV5 {
    const G& g;
    const SynTile& T;
    typename G::Col c;
    const i8* run;  // the contiguous row / column (cp.async), or null
    bool in;        // the row / column exists
    int r, h;       // row / column in the tile, first byte
    u32 v[4];

    __device__ __forceinline__ SynStageV5(const G& g_, const SynTile& T_, SynRows& As, SynRows& Bs)
        : g(g_), T(T_) {
        const int t = threadIdx.x, i = t % 128;
        r = i / 2, h = i % 2 * 16;
        if (t < 128) {
            in = T.m0 + r < g.Mg;
            run = g.a_run(in ? T.m0 + r : 0);
        } else {
            c = g.col(T.p0 + r);
            in = c.x != nullptr;
            run = g.b_run(in ? c : g.col(0));
        }
        if (g.K % 16 || reinterpret_cast<unsigned long long>(run) % 16) run = nullptr;
        fetch(0, As, Bs);
    }
    __device__ __forceinline__ unsigned char* dst(SynRows& As, SynRows& Bs) const {
        return threadIdx.x < 128 ? &As[r][h] : &Bs[r][h];
    }
    __device__ __forceinline__ void store(SynRows& As, SynRows& Bs) const {
        if (run) return;
        u32* d = reinterpret_cast<u32*>(dst(As, Bs));
        d[0] = v[0], d[1] = v[1], d[2] = v[2], d[3] = v[3];
    }
    __device__ __forceinline__ void wait() const { syn_cp_async_wait<0>(); }
    __device__ __forceinline__ void fetch(int k0, SynRows& As, SynRows& Bs) {
        const int k = k0 + h;
        if (run) {
            const bool live = in && k < g.K;
            syn_cp_async<16>(dst(As, Bs), live ? run + k : run, live ? 16 : 0);
            syn_cp_async_commit();
        } else if (threadIdx.x < 128) {
            syn_a8(g, T.m0 + r, k, v), syn_a8(g, T.m0 + r, k + 8, v + 2);
        } else {
            syn_b8(g, c, k, v), syn_b8(g, c, k + 8, v + 2);
        }
    }
};

// 8 warps as 2 (m) x 4 (p); warp (wm, wp) computes rows 32 wm .. +31 and columns
// 16 wp .. +15 of the tile as 2 x 2 mma.sync m16n8k32, requantization fused into
// the accumulator fragments. Stage: the staging policy (v3, v5). Per step: the
// stage's registers to this buffer, its copies waited for, one barrier, the next
// step fetched into the other buffer, this one multiplied.
template <template <class> class Stage, class G, class E>
__device__ __forceinline__ void syn_igemm_mma(const G& g0, const E& e, i8* y, SynRows* As,
                                              SynRows* Bs) {
    __shared__ SynSums S;
    const SynTile T = syn_tile(g0);
    const G g = g0.group(T.grp);
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const int wm = warp / 4 * 32, wp = warp % 4 * 16;
    int acc[2][2][4] = {};
    u32 s = 0;
    Stage<G> st(g, T, As[0], Bs[0]);
    for (int k0 = 0, buf = 0; k0 < g.K; k0 += SYN_TK, buf ^= 1) {
        st.store(As[buf], Bs[buf]);
        st.wait();
        __syncthreads();
        if (k0 + SYN_TK < g.K) st.fetch(k0 + SYN_TK, As[buf ^ 1], Bs[buf ^ 1]);
        // ldmatrix x4: lane 8 j + i names row i of 8x8 b16 matrix j. A fragment
        // (PTX ISA m16n8k32 .s8): a[r] = rows 8 (r & 1) .., bytes 16 (r >> 1) ..;
        // B fragment of column block n: b[r] = columns 8 n .., bytes 16 r ...
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
        syn_sum_step<E>(s, reinterpret_cast<const u32*>(As[buf][t % SYN_TM]),
                        reinterpret_cast<const u32*>(Bs[buf][t % SYN_TP]), 1);
    }
    syn_sums_publish(S, s);
    // Accumulator fragment: c[r] = C[g + 8 (r >> 1)][2 q + (r & 1)], g = lane / 4, q = lane % 4.
#pragma unroll
    for (int ni = 0; ni < 2; ++ni)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int p = wp + 8 * ni + 2 * (lane % 4) + (r & 1);
            const typename G::Col c = g.col(T.p0 + p);
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
                syn_put(g, e, T, S, y, c, wm + 16 * mi + lane / 4 + 8 * (r >> 1), p, (u32)acc[mi][ni][r]);
        }
}

template <class G, class E>
__device__ __forceinline__ void syn_igemm_v3(const G& g, const E& e, i8* y) {
    __shared__ __align__(16) SynRows As[2], Bs[2];
    syn_igemm_mma<SynStageV3>(g, e, y, As, Bs);
}

template <class G, class E>
__device__ __forceinline__ void syn_igemm_v5(const G& g, const E& e, i8* y) {
    __shared__ __align__(16) SynRows As[2], Bs[2];
    syn_igemm_mma<SynStageV5>(g, e, y, As, Bs);
}

// v6 (channels-last conv): v5's tensor cores and cp.async on sm_80+, v2's dp4a
// tiles below (mma.sync m16n8k32 s8 needs sm_80), chosen when NVRTC compiles.
template <class G, class E>
__device__ __forceinline__ void syn_igemm_v6(const G& g, const E& e, i8* y) {
#if __CUDA_ARCH__ >= 800
    syn_igemm_v5(g, e, y);
#else
    syn_igemm_v2(g, e, y);
#endif
}
#endif  // SYNAPSE_HOST_COMPAT

// A kernel's body: the tiled variant on a device, the output-by-output loop on the host.
#ifdef SYNAPSE_HOST_COMPAT
#define SYN_IGEMM(variant, g, e, y, groups) syn_igemm_host(g, e, y, groups)
#else
#define SYN_IGEMM(variant, g, e, y, groups) syn_igemm_##variant(g, e, y)
#endif

#endif  // SYNAPSE_IGEMM_CUH
