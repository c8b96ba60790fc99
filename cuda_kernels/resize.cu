// resize.cu: resize_linear, (multi)linear interpolation along the per-sample axes
// (reference/resize.py).
//
// Variants:
//   v1  naive: one thread per output element; it visits the 2^k corners in binary
//       order (axis 1 most significant) and sums weight products times x - z_x.
//
// meta: y's shape, x's shape, the frac bits F_a (rank each; F_0 unused). indices: per
// axis the lo list, then the hi list; weights: per axis the hi weights w in [0, 2^F_a]
// (lo gets 2^F_a - w). acc is exact in int64 (|acc| <= 255 * 2^30, sum F_a <= 30);
// y = clamp(rhe(acc * m * 2^-s) + z_y), s = shift + sum F_a in [1, 62], |acc m| < 2^62.
// No float.
#include "synapse_int.cuh"

__host__ __device__ __forceinline__ i8 resize_linear_output(
    const i8* x, const i64* meta, const int* indices, const int* weights, i64 i, i64 rank,
    i64 x_zero_point, i64 y_zero_point, i64 multiplier, i64 shift, i64 qmin, i64 qmax) {
    const i64* yshape = meta;
    const i64* xshape = meta + rank;
    const i64* frac = meta + 2 * rank;
    const i64 k = rank - 1;
    // Output coordinates are recomputed per corner (o = i / stride % yshape[a]): an
    // array indexed at run time would live in local memory (tests/test_cuda_nvrtc.py).
    i64 inner = 1;  // elements of y per step along axis 1, within a sample
    for (i64 a = 2; a <= k; ++a) inner *= yshape[a];
    const i64 n = i / (inner * yshape[1]);  // the sample
    i64 acc = 0;
    for (i64 corner = 0; corner < ((i64)1 << k); ++corner) {
        i64 off = n, factor = 1, istart = 0, wstart = 0, stride = inner;
        for (i64 a = 1; a <= k; ++a) {
            const i64 o = i / stride % yshape[a];
            if (a < k) stride /= yshape[a + 1];
            const bool hi = (corner >> (k - a)) & 1;
            const i64 w = weights[wstart + o];
            off = off * xshape[a] + indices[istart + (hi ? yshape[a] : 0) + o];
            factor *= hi ? w : ((i64)1 << frac[a]) - w;
            istart += 2 * yshape[a];
            wstart += yshape[a];
        }
        acc += factor * ((i64)x[off] - x_zero_point);
    }
    i64 s = shift;
    for (i64 a = 1; a <= k; ++a) s += frac[a];
    const i64 v = acc * multiplier;
    i64 q = v >> s;  // arithmetic shift: floor
    const i64 r = v - (q << s), half = (i64)1 << (s - 1);
    q += r > half || (r == half && (q & 1));
    return (i8)syn_clamp(q + y_zero_point, qmin, qmax);
}

extern "C" __global__ void resize_linear_v1(
    const i8* x, const i64* meta, const int* indices, const int* weights, i8* y, i64 total,
    i64 rank, i64 x_zero_point, i64 y_zero_point, i64 multiplier, i64 shift, i64 qmin,
    i64 qmax) {
    SYN_FOR_EACH_OUTPUT(i, total)
        y[i] = resize_linear_output(x, meta, indices, weights, i, rank, x_zero_point,
                                    y_zero_point, multiplier, shift, qmin, qmax);
}
