// synapse_warp.cuh: warp-level int8 matrix instructions for kernels that use tensor
// cores (sm_80 and later), as functions over registers.
//
// On a GPU each function is one PTX instruction (inline asm). Under the emulated
// device of the tests (tests/emucuda, SYNAPSE_EMUCUDA defined) the same call runs
// the emulator's lane-by-lane model of the instruction, built from the PTX ISA's
// fragment layouts; tests/test_emucuda.py checks that model against a plain
// matmul. Every lane of the warp must call them together (.sync.aligned).
#ifndef SYNAPSE_WARP_CUH
#define SYNAPSE_WARP_CUH

// D = A * B + C for one 16x32 (A, row-major) by 32x8 (B, column-major) int8 tile,
// int32 accumulators, wrapping on overflow. Per lane: a[4], b[2] (4 int8 each),
// c[4], d[4] as the PTX ISA's m16n8k32 .s8 fragments lay them out.
__device__ __forceinline__ void syn_mma_m16n8k32_s8(int* d, const unsigned int* a,
                                                    const unsigned int* b, const int* c) {
#if defined(SYNAPSE_EMUCUDA)
    emu_mma_m16n8k32_s8(d, a, b, c);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11, %12, %13};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]),
          "r"(c[2]), "r"(c[3]));
#else
    __trap();  // no int8 mma.sync m16n8k32 before sm_80
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lane 8 j + r gives the shared-memory
// address of row r (16 bytes, 16-byte aligned) of 8x8 b16 matrix j; r[j] receives
// this lane's fragment of matrix j.
__device__ __forceinline__ void syn_ldmatrix_x4(unsigned int* r, const void* row) {
#if defined(SYNAPSE_EMUCUDA)
    emu_ldmatrix(r, 4, 0, row);
#elif __CUDA_ARCH__ >= 750
    const unsigned int addr = (unsigned int)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
    __trap();
#endif
}

// The same with .trans: each 8x8 b16 matrix is transposed on the way.
__device__ __forceinline__ void syn_ldmatrix_x4_trans(unsigned int* r, const void* row) {
#if defined(SYNAPSE_EMUCUDA)
    emu_ldmatrix(r, 4, 1, row);
#elif __CUDA_ARCH__ >= 750
    const unsigned int addr = (unsigned int)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
    __trap();
#endif
}

#endif  // SYNAPSE_WARP_CUH
