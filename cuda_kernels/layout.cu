// layout.cu: activation layout conversions for the channels-last conv (conv.cu v6),
// inserted by the CUDA lowering's layout pass at the edges of channels-last runs.
// Exact byte moves: x (N, C, S) <-> y (N, S, C), S the spatial elements of a sample.
#include "synapse_int.cuh"

extern "C" __global__ void nchw_to_nhwc_v1(const i8* x, i8* y, i64 N, i64 C, i64 S) {
    SYN_FOR_EACH_OUTPUT(i, N * S * C) {  // i indexes y: (n, s, c)
        const i64 c = i % C, s = i / C % S, n = i / (C * S);
        y[i] = x[(n * C + c) * S + s];
    }
}

extern "C" __global__ void nhwc_to_nchw_v1(const i8* x, i8* y, i64 N, i64 C, i64 S) {
    SYN_FOR_EACH_OUTPUT(i, N * C * S) {  // i indexes y: (n, c, s)
        const i64 s = i % S, c = i / S % C, n = i / (C * S);
        y[i] = x[(n * S + s) * C + c];
    }
}
