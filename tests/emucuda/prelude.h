// emucuda prelude: what NVRTC provides without any #include, for g++.
//
// Force-included (g++ -include) into a kernel source compiled with -nostdinc, so
// the source sees what NVRTC sees: the CUDA macros defined (__CUDA_ARCH__ too, so
// device branches are the ones compiled), no host headers, the built-in variables
// and intrinsics. Built-in variables read the current emulated thread's context,
// which runtime.cpp switches as its fibers run. Intrinsics are exact integer
// re-implementations of the PTX instructions they stand for.
#ifndef EMUCUDA_PRELUDE_H
#define EMUCUDA_PRELUDE_H

#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#define SYNAPSE_EMUCUDA 1
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 800
#endif

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
// One block runs at a time (runtime.cpp), so a function-local static is exactly
// one copy of the array per running block.
#define __shared__ static
#define __constant__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define warpSize 32

typedef unsigned long size_t;

#include "emu_abi.h"

#define threadIdx (emu_cur->tid)
#define blockIdx (emu_cur->bid)
#define blockDim (emu_cur->bdim)
#define gridDim (emu_cur->gdim)

extern "C" int printf(const char*, ...);


__forceinline__ void __syncthreads() { emu_syncthreads(); }
__forceinline__ int __syncthreads_count(int p) { return emu_syncthreads_reduce(0, p); }
__forceinline__ int __syncthreads_and(int p) { return emu_syncthreads_reduce(1, p); }
__forceinline__ int __syncthreads_or(int p) { return emu_syncthreads_reduce(2, p); }
__forceinline__ void __syncwarp(unsigned int mask = 0xffffffffu) { emu_syncwarp(mask); }
__forceinline__ unsigned int __activemask() { return emu_activemask(); }
__forceinline__ void __threadfence() {}
__forceinline__ void __threadfence_block() {}
__forceinline__ void __trap() { emu_trap("__trap()"); }

template <typename T>
__forceinline__ T emu_shfl(int kind, unsigned int mask, T var, int param, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    unsigned long long bits = 0;
    __builtin_memcpy(&bits, &var, sizeof(T));
    bits = emu_warp_exchange(mask, kind, bits, param, width);
    T out;
    __builtin_memcpy(&out, &bits, sizeof(T));
    return out;
}
template <typename T>
__forceinline__ T __shfl_sync(unsigned int mask, T var, int src, int width = 32) {
    return emu_shfl(EMU_SHFL_IDX, mask, var, src, width);
}
template <typename T>
__forceinline__ T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = 32) {
    return emu_shfl(EMU_SHFL_UP, mask, var, (int)delta, width);
}
template <typename T>
__forceinline__ T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = 32) {
    return emu_shfl(EMU_SHFL_DOWN, mask, var, (int)delta, width);
}
template <typename T>
__forceinline__ T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = 32) {
    return emu_shfl(EMU_SHFL_XOR, mask, var, lane_mask, width);
}
__forceinline__ unsigned int __ballot_sync(unsigned int mask, int p) {
    return (unsigned int)emu_warp_exchange(mask, EMU_BALLOT, p != 0, 0, 32);
}
__forceinline__ int __any_sync(unsigned int mask, int p) {
    return (int)emu_warp_exchange(mask, EMU_ANY, p != 0, 0, 32);
}
__forceinline__ int __all_sync(unsigned int mask, int p) {
    return (int)emu_warp_exchange(mask, EMU_ALL, p != 0, 0, 32);
}

// Bit intrinsics: the device defines the zero cases (clz(0) = width, ffs(0) = 0).
__forceinline__ int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
__forceinline__ int __clzll(long long x) {
    return x == 0 ? 64 : __builtin_clzll((unsigned long long)x);
}
__forceinline__ int __popc(unsigned int x) { return __builtin_popcount(x); }
__forceinline__ int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
__forceinline__ int __ffs(int x) { return __builtin_ffs(x); }
__forceinline__ int __ffsll(long long x) { return __builtin_ffsll(x); }
__forceinline__ unsigned int __brev(unsigned int x) {
    unsigned int r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
__forceinline__ unsigned long long __brevll(unsigned long long x) {
    unsigned long long r = 0;
    for (int i = 0; i < 64; ++i) r |= ((x >> i) & 1ull) << (63 - i);
    return r;
}
// Byte n of the result is byte (s >> 4n) & 7 of the 8-byte value {y, x} (x low).
__forceinline__ unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    const unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned int r = 0;
    for (int n = 0; n < 4; ++n) r |= (unsigned int)((v >> (8 * ((s >> (4 * n)) & 7))) & 0xff) << (8 * n);
    return r;
}
// Four byte products summed into c, with 32-bit wraparound as the instruction does.
__forceinline__ int __dp4a(int a, int b, int c) {
    unsigned int acc = (unsigned int)c;
    for (int n = 0; n < 4; ++n)
        acc += (unsigned int)((int)(signed char)(a >> (8 * n)) * (int)(signed char)(b >> (8 * n)));
    return (int)acc;
}
__forceinline__ unsigned int __dp4a(unsigned int a, unsigned int b, unsigned int c) {
    for (int n = 0; n < 4; ++n) c += ((a >> (8 * n)) & 0xff) * ((b >> (8 * n)) & 0xff);
    return c;
}
__forceinline__ int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
__forceinline__ unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
__forceinline__ long long __mul64hi(long long a, long long b) {
    return (long long)(((__int128)a * b) >> 64);
}
__forceinline__ unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
__forceinline__ int __mul24(int a, int b) {  // low 32 bits of the 24-bit operands' product
    return (int)((unsigned int)((a << 8) >> 8) * (unsigned int)((b << 8) >> 8));
}
__forceinline__ unsigned int __umul24(unsigned int a, unsigned int b) {
    return (a & 0xffffffu) * (b & 0xffffffu);
}
__forceinline__ unsigned int __sad(int a, int b, unsigned int c) {
    return c + (unsigned int)(a > b ? (long long)a - b : (long long)b - a);
}
__forceinline__ unsigned int __usad(unsigned int a, unsigned int b, unsigned int c) {
    return c + (a > b ? a - b : b - a);
}
__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ int max(int a, int b) { return a > b ? a : b; }
__forceinline__ unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
__forceinline__ unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
__forceinline__ long long min(long long a, long long b) { return a < b ? a : b; }
__forceinline__ long long max(long long a, long long b) { return a > b ? a : b; }
__forceinline__ long long llmin(long long a, long long b) { return a < b ? a : b; }
__forceinline__ long long llmax(long long a, long long b) { return a > b ? a : b; }
__forceinline__ int abs(int a) { return a < 0 ? -a : a; }
__forceinline__ long long llabs(long long a) { return a < 0 ? -a : a; }
template <typename T>
__forceinline__ T __ldg(const T* p) { return *p; }
// Shared-window addresses are plain host addresses here.
__forceinline__ size_t __cvta_generic_to_shared(const void* p) { return (size_t)p; }

#endif  // EMUCUDA_PRELUDE_H
