// embedding.cu: constant int8 tables read without arithmetic (reference/embedding.py).
//
// Variants:
//   v1  naive: one thread per output element.
//
// embedding: x holds each token id as the 4 little-endian bytes of its int32 value
// (int8 codes); the session range-checks every id to [0, vocab) before a run, so the
// guard below only keeps a caller that bypasses it from reading outside the table.
// constant: the per-sample value repeated for every sample (the batch is n / per_sample).
#include "synapse_int.cuh"

__host__ __device__ __forceinline__ i8 embedding_output(const i8* x, const i8* table, i64 i,
                                                        i64 vocab, i64 dim) {
    const i8* b = x + (i / dim) * 4;
    const i64 id = (i64)(unsigned char)b[0] | ((i64)(unsigned char)b[1] << 8) |
                   ((i64)(unsigned char)b[2] << 16) | ((i64)(unsigned char)b[3] << 24);
    return id < vocab ? table[id * dim + i % dim] : (i8)0;
}

extern "C" __global__ void embedding_v1(const i8* x, const i8* table, i8* y, i64 n, i64 vocab,
                                        i64 dim) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = embedding_output(x, table, i, vocab, dim);
}

extern "C" __global__ void constant_v1(const i8* value, i8* y, i64 n, i64 per_sample) {
    SYN_FOR_EACH_OUTPUT(i, n) y[i] = value[i % per_sample];
}
