// shape.cu: transpose, concat, pad (reference/shape.py). flatten, reshape and
// identity need no kernel: the backend copies the bytes (row-major order is kept).
//
// Variants:
//   v1  naive: one thread per output element (concat: one launch per input, one
//       thread per element of that input's part of the output).
//
// Shapes and strides of any rank come in a small int64 table (meta), uploaded once
// per batch size. No arithmetic except concat's rescale (|x - z| <= 255).
#include "synapse_int.cuh"

// meta: y's shape, then x's strides permuted into y's axis order.
__host__ __device__ __forceinline__ i8 transpose_output(const i8* x, const i64* meta, i64 i,
                                                        i64 rank) {
    return x[syn_offset(i, rank, meta, meta + rank)];
}

extern "C" __global__ void transpose_v1(const i8* x, const i64* meta, i8* y, i64 n, i64 rank) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = transpose_output(x, meta, i, rank);
}

// Input element i of x (outer, part) lands at y[outer, offset + i % part] of y
// (outer, width); part = x.shape[axis] * inner, width = y.shape[axis] * inner.
// Value: requant(x - z_x; multiplier, shift, z_y) over the whole int8 range.
__host__ __device__ __forceinline__ i8 concat_output(
    const i8* x, i64 i, i64 x_zero_point, i64 multiplier, i64 shift, i64 y_zero_point) {
    return syn_requant(x[i] - x_zero_point, multiplier, shift, y_zero_point, -128, 127);
}

extern "C" __global__ void concat_v1(
    const i8* x, i8* y, i64 n, i64 part, i64 width, i64 offset,
    i64 x_zero_point, i64 multiplier, i64 shift, i64 y_zero_point) {
    SYN_FOR_EACH_OUTPUT(i, n)
        y[i / part * width + offset + i % part] =
            concat_output(x, i, x_zero_point, multiplier, shift, y_zero_point);
}

#define SYN_PAD_CONSTANT 0
#define SYN_PAD_EDGE 1
#define SYN_PAD_REFLECT 2

// meta: y's shape, x's shape, the begin pads (all of length rank). Each axis maps
// an output coordinate to an input one independently, as numpy.pad does:
// edge clamps; reflect mirrors about the border element, periodically with period
// 2 (n - 1) (numpy's result for pads of any size; n = 1 repeats the element).
__host__ __device__ __forceinline__ i8 pad_output(const i8* x, const i64* meta, i64 i,
                                                  i64 rank, i64 mode, i64 value) {
    const i64* yshape = meta;
    const i64* xshape = meta + rank;
    const i64* begin = meta + 2 * rank;
    i64 off = 0, stride = 1;
    for (i64 d = rank - 1; d >= 0; --d) {
        const i64 n = xshape[d];
        i64 c = i % yshape[d] - begin[d];
        i /= yshape[d];
        if (c < 0 || c >= n) {
            if (mode == SYN_PAD_CONSTANT) return (i8)value;
            if (mode == SYN_PAD_EDGE) {
                c = c < 0 ? 0 : n - 1;
            } else if (n == 1) {
                c = 0;
            } else {
                const i64 period = 2 * (n - 1);
                c %= period;
                if (c < 0) c += period;
                if (c >= n) c = period - c;
            }
        }
        off += c * stride;
        stride *= n;
    }
    return x[off];
}

extern "C" __global__ void pad_v1(const i8* x, const i64* meta, i8* y, i64 n, i64 rank,
                                  i64 mode, i64 value) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = pad_output(x, meta, i, rank, mode, value);
}
