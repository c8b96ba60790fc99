// host_compat.h: compile synapse_int.cuh and the kernel sources with a host C++
// compiler (g++/clang++), so tests run the very same integer code on the CPU.
//
// Include it before any .cu file (g++ -x c++ -include host_compat.h k.cu). The
// CUDA qualifiers become no-ops, __global__ kernels become plain extern "C"
// functions, and the launch geometry is a 1x1 grid: a kernel's grid-stride loop
// (SYN_FOR_EACH_OUTPUT) then visits every output in order in one call.
// Device intrinsics have host fallbacks under #ifndef __CUDA_ARCH__ in
// synapse_int.cuh itself, since nvcc's host pass needs them too.
#ifndef SYNAPSE_HOST_COMPAT_H
#define SYNAPSE_HOST_COMPAT_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#error "host_compat.h is for host compilers only"
#endif

#define SYNAPSE_HOST_COMPAT 1

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline

struct syn_host_dim3 {
    unsigned int x, y, z;
};
static const syn_host_dim3 threadIdx = {0, 0, 0};
static const syn_host_dim3 blockIdx = {0, 0, 0};
static const syn_host_dim3 blockDim = {1, 1, 1};
static const syn_host_dim3 gridDim = {1, 1, 1};

#endif  // SYNAPSE_HOST_COMPAT_H
