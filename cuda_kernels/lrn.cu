// lrn.cu: local response normalization across channels (reference/lrn.py).
//
// Variants:
//   v1  naive: one thread per output element; the thread sums the squares of its
//       channel window (ascending), then binary-searches its code's threshold row.
//
// Rule: d = x - z_x; S = sum over the window of d^2 (int64 here; < 2^31 by the
// size limit); y = clamp(start[r] + step[r] * #{j : thresholds[r][j] <= S}, qmin,
// qmax) with r = x + 128 and each row ascending (width T). No float.
#include "synapse_int.cuh"

__host__ __device__ __forceinline__ i8 lrn_output(
    const i8* x, const i8* start, const i8* step, const int* thresholds, i64 i, i64 C,
    i64 inner, i64 T, i64 size, i64 x_zero_point, i64 qmin, i64 qmax) {
    const i64 c = i / inner % C;
    const i8* col = x + (i - c * inner);  // channel 0 of this sample and position
    const i64 lo = syn_max(0, c - (size - 1) / 2);
    const i64 hi = syn_min(C - 1, c + (size - 1) - (size - 1) / 2);
    i64 s = 0;
    for (i64 k = lo; k <= hi; ++k) {
        const i64 d = (i64)col[k * inner] - x_zero_point;
        s += d * d;
    }
    const i64 r = (i64)x[i] + 128;
    const int* row = thresholds + r * T;
    i64 a = 0, b = T;  // count of row entries <= s (the row is ascending)
    while (a < b) {
        const i64 m = (a + b) / 2;
        if ((i64)row[m] <= s) a = m + 1; else b = m;
    }
    return (i8)syn_clamp((i64)start[r] + (i64)step[r] * a, qmin, qmax);
}

extern "C" __global__ void lrn_v1(
    const i8* x, const i8* start, const i8* step, const int* thresholds, i8* y, i64 n, i64 C,
    i64 inner, i64 T, i64 size, i64 x_zero_point, i64 qmin, i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, n)
        y[i] = lrn_output(x, start, step, thresholds, i, C, inner, T, size, x_zero_point, qmin,
                          qmax);
}
