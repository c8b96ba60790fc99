// emu_abi.h: the types and functions shared by prelude.h (kernel side, no host
// headers) and runtime.cpp (the scheduler). One definition, so the layouts agree.
#ifndef EMUCUDA_ABI_H
#define EMUCUDA_ABI_H

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };
struct int2 { int x, y; };
struct int4 { int x, y, z, w; };
struct uint2 { unsigned int x, y; };
struct uint4 { unsigned int x, y, z, w; };
struct char4 { signed char x, y, z, w; };
struct uchar4 { unsigned char x, y, z, w; };

struct emu_thread {
    uint3 tid, bid;
    dim3 bdim, gdim;
    unsigned int lane, warp;
};
extern "C" const emu_thread* emu_cur;  // the running thread (runtime.cpp)

extern "C" {
void emu_syncthreads(void);
int emu_syncthreads_reduce(int op, int pred);  // op: 0 count, 1 and, 2 or
void emu_syncwarp(unsigned int mask);
// A warp collective: every lane in mask arrives with 8 bytes and a parameter;
// kind picks what each lane gets back (runtime.cpp, emu_warp_result).
unsigned long long emu_warp_exchange(unsigned int mask, int kind, unsigned long long v, int param,
                                     int width);
unsigned int emu_activemask(void);
void emu_trap(const char* what) __attribute__((noreturn));
// Warp matrix instructions, lane by lane from the PTX ISA's fragment layouts.
void emu_mma_m16n8k32_s8(int* d, const unsigned int* a, const unsigned int* b, const int* c);
void emu_ldmatrix(unsigned int* r, int count, int trans, const void* row_address);
// cp.async (sm_80): per thread, deferred. A copy poisons its destination when issued
// and lands only when a wait_group retires its group (runtime.cpp).
void emu_cp_async(void* dst, const void* src, int bytes, int src_bytes, int cache_global);
void emu_cp_async_commit(void);
void emu_cp_async_wait(int pending);
}

enum { EMU_SHFL_IDX, EMU_SHFL_UP, EMU_SHFL_DOWN, EMU_SHFL_XOR, EMU_BALLOT, EMU_ANY, EMU_ALL,
       EMU_SYNCWARP };

#endif  // EMUCUDA_ABI_H
