// synapse_async.cuh: asynchronous global -> shared copies (cp.async, sm_80 and later),
// as functions.
//
// Per thread: copies issued, then closed into a group by syn_cp_async_commit();
// syn_cp_async_wait<N>() returns once all but this thread's N most recent groups
// have landed. Other threads see the data only after a barrier following the wait.
// Until the wait the destination is undefined: the emulated device of the tests
// (tests/emucuda, SYNAPSE_EMUCUDA) poisons it at the issue and writes the data at
// the wait, so a read before the wait or a missing barrier fails there.
#ifndef SYNAPSE_ASYNC_CUH
#define SYNAPSE_ASYNC_CUH

// Copy BYTES (4, 8 or 16; dst and src aligned to it) from global src to shared dst;
// only the first src_bytes are read, the rest of dst is zero-filled (src_bytes = 0:
// nothing is read, src need only be a valid address). 16 bytes bypass L1 (.cg).
template <int BYTES>
__device__ __forceinline__ void syn_cp_async(void* dst, const void* src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(SYNAPSE_EMUCUDA)
    emu_cp_async(dst, src, BYTES, src_bytes, BYTES == 16);
#elif __CUDA_ARCH__ >= 800
    const unsigned int addr = (unsigned int)__cvta_generic_to_shared(dst);
    if (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src),
                     "r"(src_bytes) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(addr), "l"(src),
                     "n"(BYTES), "r"(src_bytes) : "memory");
#else
    __trap();  // no cp.async before sm_80
#endif
}

__device__ __forceinline__ void syn_cp_async_commit() {
#if defined(SYNAPSE_EMUCUDA)
    emu_cp_async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int PENDING>
__device__ __forceinline__ void syn_cp_async_wait() {
#if defined(SYNAPSE_EMUCUDA)
    emu_cp_async_wait(PENDING);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}

#endif  // SYNAPSE_ASYNC_CUH
