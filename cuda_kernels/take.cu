// take.cu: select elements along each per-sample axis by constant index lists
// (reference/take.py).
//
// Variants:
//   v1  naive: one thread per output element; the input offset is built axis by
//       axis from the output coordinate and that axis's index list.
//
// meta: y's shape, then x's shape (both of length rank, batch first); indices: the
// per-axis lists for axes 1..rank-1, concatenated (int32, validated at load: every
// entry is inside its axis). No arithmetic on values.
#include "synapse_int.cuh"

__host__ __device__ __forceinline__ i8 take_output(const i8* x, const i64* meta,
                                                   const int* indices, i64 i, i64 rank) {
    const i64* yshape = meta;
    const i64* xshape = meta + rank;
    i64 start = 0;
    for (i64 d = 1; d < rank; ++d) start += yshape[d];  // end of the last axis's list
    i64 off = 0, stride = 1;
    for (i64 d = rank - 1; d >= 1; --d) {
        start -= yshape[d];
        off += (i64)indices[start + i % yshape[d]] * stride;
        i /= yshape[d];
        stride *= xshape[d];
    }
    return x[off + i * stride];  // i is now the sample index
}

extern "C" __global__ void take_v1(const i8* x, const i64* meta, const int* indices, i8* y,
                                   i64 n, i64 rank) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = take_output(x, meta, indices, i, rank);
}
