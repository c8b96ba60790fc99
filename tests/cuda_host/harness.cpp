// harness.cpp: the requantization helpers of synapse_int.cuh over whole arrays,
// for tests/test_cuda_host.py (ctypes). The kernels themselves are exported by
// compiling the .cu files with host_compat.h (a 1x1 grid visits every output).
#include "synapse_int.cuh"

extern "C" {

void syn_bit_length_vec(const i64* v, i64 n, i64* out) {
    for (i64 i = 0; i < n; ++i) out[i] = syn_bit_length(v[i]);
}

void syn_round_shift_vec(const i64* v, const i64* s, i64 n, i64* out) {
    for (i64 i = 0; i < n; ++i) out[i] = syn_round_shift(v[i], s[i]);
}

void syn_round_to_24_bits_vec(const i64* v, i64 n, i64* out) {
    for (i64 i = 0; i < n; ++i) out[i] = syn_round_to_24_bits(v[i]);
}

void syn_scale_by_pow2_vec(const i64* p, const i64* k, i64 n, i64* out) {
    for (i64 i = 0; i < n; ++i) out[i] = syn_scale_by_pow2(p[i], k[i]);
}

void syn_requant_vec(const i64* acc, const i64* m, const i64* k, const i64* zero_point,
                     const i64* qmin, const i64* qmax, i64 n, i8* out) {
    for (i64 i = 0; i < n; ++i)
        out[i] = syn_requant(acc[i], m[i], k[i], zero_point[i], qmin[i], qmax[i]);
}

void syn_round_shift_zp_vec(const i64* v, const i64* s, const i64* z, i64 n, i64* out) {
    for (i64 i = 0; i < n; ++i) out[i] = syn_round_shift_zp(v[i], s[i], z[i]);
}

void syn_requant_zp_inside_vec(const i64* acc, const i64* m, const i64* k, const i64* zero_point,
                               const i64* qmin, const i64* qmax, i64 n, i8* out) {
    for (i64 i = 0; i < n; ++i)
        out[i] = syn_requant_zp_inside(acc[i], m[i], k[i], zero_point[i], qmin[i], qmax[i]);
}

}  // extern "C"
