// layernorm.cu: layer normalization over the trailing axes (reference/layernorm.py).
//
// Variants:
//   v1  naive: one thread per output element; the thread sums its row (d and d^2,
//       ascending), takes the integer square root and rescales its own element.
//
// Rule (n <= 4096 per row; d = x - z_x): S1 = sum d, S2 = sum d^2, c = n d - S1,
// V = n S2 - S1^2 + eps_term (< 2^51), P = max(0, (60 - bitlen V) / 2),
// D = isqrt(V 4^P), z = rhe(c 2^(P+16) / D) (|c 2^(P+16)| < 2^53),
// y = clamp(rhe((z g + b) 2^-(16+shift)) + z_y, qmin, qmax), g and b from row
// (row % K) of the (K, m) tables, column j (m = n) or 0 (m = 1). Integers only.
#include "synapse_int.cuh"

// floor(v / d) rounded half to even as an exact rational, d > 0 (numpy's floor
// division and modulo, then the tie rule).
__host__ __device__ __forceinline__ i64 layernorm_rhe_div(i64 v, i64 d) {
    i64 q = v / d, r = v % d;
    if (r < 0) {
        q -= 1;
        r += d;
    }
    return q + (2 * r > d || (2 * r == d && (q & 1)));
}

// floor(sqrt(v)) for 0 <= v < 2^62, bit by bit (no float).
__host__ __device__ __forceinline__ i64 layernorm_isqrt(i64 v) {
    i64 r = 0;
    for (i64 bit = (i64)1 << 60; bit > 0; bit >>= 2) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
    }
    return r;
}

__host__ __device__ __forceinline__ i8 layernorm_output(
    const i8* x, const int* g, const i64* b, i64 i, i64 n, i64 K, i64 m, i64 eps_term,
    i64 shift, i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    const i64 j = i % n;
    const i8* row = x + (i - j);
    i64 s1 = 0, s2 = 0;
    for (i64 k = 0; k < n; ++k) {
        const i64 d = (i64)row[k] - x_zero_point;
        s1 += d;
        s2 += d * d;
    }
    const i64 v = n * s2 - s1 * s1 + eps_term;
    i64 bits = 0;
    while (bits < 63 && (v >> bits) != 0) ++bits;
    const i64 p = bits < 60 ? (60 - bits) / 2 : 0;
    i64 den = layernorm_isqrt(v << (2 * p));
    if (den < 1) den = 1;
    const i64 c = n * ((i64)x[i] - x_zero_point) - s1;
    const i64 z = layernorm_rhe_div(c * ((i64)1 << (p + 16)), den);
    const i64 at = (i / n) % K * m + (m == 1 ? 0 : j);
    const i64 y = layernorm_rhe_div(z * (i64)g[at] + b[at], (i64)1 << (16 + shift));
    return (i8)syn_clamp(y + y_zero_point, qmin, qmax);
}

extern "C" __global__ void layernorm_v1(
    const i8* x, const int* g, const i64* b, i8* y, i64 total, i64 n, i64 K, i64 m,
    i64 eps_term, i64 shift, i64 x_zero_point, i64 y_zero_point, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, total)
        y[i] = layernorm_output(x, g, b, i, n, K, m, eps_term, shift, x_zero_point,
                                y_zero_point, qmin, qmax);
}
