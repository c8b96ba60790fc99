// runtime.cpp: the emulated device's execution model.
//
// emu_launch runs every thread of a grid, one block at a time. A block's threads
// run on cooperative fibers (ucontext): a fiber runs threads one after another
// until one of them waits (__syncthreads, a warp collective); then the next
// thread starts on another fiber. So a barrier-free kernel costs one fiber switch
// per block, and __shared__ memory, barriers and warp collectives behave as on a
// GPU. A barrier that can never complete (a thread exited or diverged) is
// reported as a deadlock instead of hanging, and a collective whose lanes disagree
// on the mask or the operation is an error, where hardware would be undefined.
// cp.async is deferred as the PTX ISA allows: the destination holds garbage from
// the issue until the wait that retires the copy's group, so a read before the
// wait (or a missing barrier after it) sees poison instead of the data.
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "emu_abi.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

extern "C" {
__attribute__((visibility("default"))) const emu_thread* emu_cur = nullptr;
}

namespace {

const size_t kStack = 256 * 1024;

enum State { NOT_STARTED, RUNNING, WAIT_BLOCK, WAIT_WARP, EXITED };

struct Fiber {
    ucontext_t ctx;
    char* stack;
    unsigned tid;
    bool idle;  // finished its threads; back in the pool
};

struct Warp {
    unsigned arrived = 0, mask = 0;
    int kind = 0, width = 32;
    unsigned long long val[32];
    int param[32];
    unsigned long long res[32];
};

const unsigned char kPoison = 0xCB;  // device.py's POISON_BYTE

struct AsyncCopy {
    unsigned char* dst;
    unsigned char data[16];  // the source as read at the issue, zero-filled past src-size
    int bytes;
};
typedef std::vector<AsyncCopy> AsyncGroup;

struct Launch {
    void (*call)(void**);
    void** args;
    unsigned nthreads;
    std::vector<emu_thread> threads;
    std::vector<State> state;
    std::vector<Fiber*> fiber_of;
    std::vector<Warp> warps;
    std::vector<AsyncGroup> async_open;                // per thread: issued, not committed
    std::vector<std::deque<AsyncGroup>> async_groups;  // per thread: committed, oldest first
    unsigned next_tid, exited;
    unsigned block_waiting;
    int block_op, block_acc, block_result;
    std::deque<Fiber*> runnable;
    Fiber* current;
    ucontext_t sched;
    bool failed;
    std::string error;
};

Launch L;
std::vector<Fiber*> pool;  // idle fibers, reused across blocks and launches
#ifdef EMU_ASAN
void* sched_fake_stack = nullptr;
const void* sched_bottom = nullptr;  // the scheduler's stack, as ASan reports it
size_t sched_size = 0;
#endif

void fail(const std::string& what) {
    if (!L.failed) {
        L.failed = true;
        char where[96];
        const emu_thread& t = L.threads[L.current ? L.current->tid : 0];
        snprintf(where, sizeof where, " (block (%u,%u,%u), thread (%u,%u,%u))", t.bid.x, t.bid.y,
                 t.bid.z, t.tid.x, t.tid.y, t.tid.z);
        L.error = what + where;
    }
}

// Fiber -> scheduler. Returns when the scheduler resumes this fiber.
void to_scheduler(Fiber* f) {
#ifdef EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, sched_bottom, sched_size);
    swapcontext(&f->ctx, &L.sched);
    __sanitizer_finish_switch_fiber(fake, &sched_bottom, &sched_size);
#else
    swapcontext(&f->ctx, &L.sched);
#endif
}

void to_fiber(Fiber* f) {
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&sched_fake_stack, f->stack, kStack);
    swapcontext(&L.sched, &f->ctx);
    __sanitizer_finish_switch_fiber(sched_fake_stack, nullptr, nullptr);
#else
    swapcontext(&L.sched, &f->ctx);
#endif
}

// The running thread waits: hand control back; on return it runs again.
void wait_here(State why) {
    Fiber* f = L.current;
    L.state[f->tid] = why;
    to_scheduler(f);
    emu_cur = &L.threads[f->tid];
}

void wake(unsigned tid) {
    L.state[tid] = RUNNING;
    L.runnable.push_back(L.fiber_of[tid]);
}

void release_block_barrier(unsigned self) {
    L.block_result = L.block_acc;
    L.block_waiting = 0;
    for (unsigned t = 0; t < L.nthreads; ++t)
        if (L.state[t] == WAIT_BLOCK && t != self) wake(t);
    if (self < L.nthreads) L.state[self] = RUNNING;
}

void thread_exited(unsigned tid) {
    if (!L.async_open[tid].empty() || !L.async_groups[tid].empty())
        fail("cp.async: the thread exited with copies no cp.async.wait_group retired");
    L.state[tid] = EXITED;
    ++L.exited;
    // Exited threads no longer count at a barrier (as on sm_70 and later).
    if (L.block_waiting > 0 && L.block_waiting == L.nthreads - L.exited)
        release_block_barrier(L.nthreads);
}

void fiber_main() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_bottom, &sched_size);
#endif
    for (;;) {
        Fiber* f = L.current;
        f->idle = false;
        while (!L.failed && L.next_tid < L.nthreads) {
            const unsigned t = L.next_tid++;
            f->tid = t;
            L.fiber_of[t] = f;
            L.state[t] = RUNNING;
            emu_cur = &L.threads[t];
            L.call(L.args);
            thread_exited(t);
        }
        f->idle = true;
        to_scheduler(f);
    }
}

Fiber* make_fiber(Fiber* f) {
    // Reserved, not committed (MAP_NORESERVE): every loaded module keeps its own pool of
    // idle fibers, and hundreds of modules' stacks counted against the commit limit made
    // a later fork() of the test process (Ray, subprocesses) fail with ENOMEM.
    void* stack = mmap(nullptr, kStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stack == MAP_FAILED) {
        fprintf(stderr, "emucuda: no memory for a fiber stack\n");
        abort();
    }
    f->stack = static_cast<char*>(stack);
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = kStack;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, fiber_main, 0);
    return f;
}

Fiber* new_fiber() {
    if (!pool.empty()) {
        Fiber* f = pool.back();
        pool.pop_back();
        return f;
    }
    return make_fiber(new Fiber());
}

void free_fiber(Fiber* f) {
    munmap(f->stack, kStack);
    delete f;
}

const char* kind_name(int kind) {
    static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync",
                                  "__syncwarp", "mma.sync", "ldmatrix"};
    return kind >= 0 && kind < 10 ? names[kind] : "a warp collective";
}

// Kinds past the public ones: the matrix instructions pass pointers as values.
enum { EMU_MMA = EMU_SYNCWARP + 1, EMU_LDMATRIX };

struct MmaLane { int* d; const unsigned* a; const unsigned* b; const int* c; };
struct LdmLane { unsigned* r; int count, trans; const unsigned char* row; };

int8_t byte_of(unsigned reg, int i) { return (int8_t)(reg >> (8 * i)); }

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32, from the PTX ISA's fragment
// layouts; group g = lane >> 2, t = lane % 4:
//   A (16x32): a[r] byte j is A[g + 8 * (r & 1)][4 t + j + 16 * (r >> 1)]
//   B (32x8):  b[r] byte j is B[4 t + j + 16 r][g]
//   C, D (16x8): c[r] is C[g + 8 * (r >> 1)][2 t + (r & 1)]
// The s32 accumulation wraps modulo 2^32 (no .satfinite).
void mma_m16n8k32(Warp& w) {
    int A[16][32], B[32][8];
    unsigned C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const MmaLane* p = reinterpret_cast<const MmaLane*>(w.val[lane]);
        const int g = lane >> 2, t = lane & 3;
        for (int r = 0; r < 4; ++r)
            for (int j = 0; j < 4; ++j) A[g + 8 * (r & 1)][4 * t + j + 16 * (r >> 1)] = byte_of(p->a[r], j);
        for (int r = 0; r < 2; ++r)
            for (int j = 0; j < 4; ++j) B[4 * t + j + 16 * r][g] = byte_of(p->b[r], j);
        for (int r = 0; r < 4; ++r) C[g + 8 * (r >> 1)][2 * t + (r & 1)] = (unsigned)p->c[r];
    }
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n)
            for (int k = 0; k < 32; ++k) C[m][n] += (unsigned)(A[m][k] * B[k][n]);
    for (int lane = 0; lane < 32; ++lane) {
        const MmaLane* p = reinterpret_cast<const MmaLane*>(w.val[lane]);
        const int g = lane >> 2, t = lane & 3;
        for (int r = 0; r < 4; ++r) p->d[r] = (int)C[g + 8 * (r >> 1)][2 * t + (r & 1)];
    }
}

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16: matrix j's row r starts
// at the address given by lane 8 j + r (16 bytes: 8 b16 elements). Lane l receives
// in r[j] the elements (l >> 2, 2 (l % 4)) and (l >> 2, 2 (l % 4) + 1) of matrix j,
// or with .trans those of its transpose.
void ldmatrix(Warp& w) {
    const LdmLane* first = reinterpret_cast<const LdmLane*>(w.val[0]);
    const int count = first->count, trans = first->trans;
    for (int lane = 0; lane < 32; ++lane) {
        const LdmLane* p = reinterpret_cast<const LdmLane*>(w.val[lane]);
        if (p->count != count || p->trans != trans) return fail("ldmatrix: lanes disagree on the shape");
    }
    for (int lane = 0; lane < 8 * count; ++lane)
        if (reinterpret_cast<uintptr_t>(reinterpret_cast<const LdmLane*>(w.val[lane])->row) % 16)
            return fail("ldmatrix: a row address is not 16-byte aligned");
    for (int lane = 0; lane < 32; ++lane) {
        const LdmLane* p = reinterpret_cast<const LdmLane*>(w.val[lane]);
        for (int j = 0; j < count; ++j) {
            unsigned v = 0;
            for (int h = 0; h < 2; ++h) {
                const int e = 2 * (lane & 3) + h;
                const int row = trans ? e : lane >> 2, col = trans ? lane >> 2 : e;
                const unsigned char* src =
                    reinterpret_cast<const LdmLane*>(w.val[8 * j + row])->row + 2 * col;
                v |= (unsigned)(src[0] | (src[1] << 8)) << (16 * h);
            }
            p->r[j] = v;
        }
    }
}

// Every lane of w.mask has arrived: compute what each gets back.
void warp_results(Warp& w) {
    if (w.kind == EMU_MMA) return mma_m16n8k32(w);
    if (w.kind == EMU_LDMATRIX) return ldmatrix(w);
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l)
        if ((w.mask >> l & 1) && w.val[l]) ballot |= 1u << l;
    for (int l = 0; l < 32; ++l) {
        if (!(w.mask >> l & 1)) continue;
        const int seg = l & ~(w.width - 1), pos = l & (w.width - 1), p = w.param[l];
        int src = l;
        switch (w.kind) {
            case EMU_SHFL_IDX: src = seg + (p & (w.width - 1)); break;
            case EMU_SHFL_UP: src = pos >= p ? l - p : l; break;
            case EMU_SHFL_DOWN: src = pos + p < w.width ? l + p : l; break;
            case EMU_SHFL_XOR: src = (l ^ p) < seg + w.width ? (l ^ p) : l; break;
            case EMU_BALLOT: w.res[l] = ballot; continue;
            case EMU_ANY: w.res[l] = ballot != 0; continue;
            case EMU_ALL: w.res[l] = ballot == w.mask; continue;
            default: w.res[l] = 0; continue;
        }
        if (src < 0 || src > 31 || !(w.mask >> src & 1)) {
            char msg[96];
            snprintf(msg, sizeof msg, "%s: lane %d reads lane %d, which is not in the mask",
                     kind_name(w.kind), l, src);
            return fail(msg);
        }
        w.res[l] = w.val[src];
    }
}

unsigned long long warp_exchange(unsigned mask, int kind, unsigned long long v, int param,
                                 int width) {
    const emu_thread& me = *emu_cur;
    const unsigned lane = me.lane;
    Warp& w = L.warps[me.warp];
    const unsigned first = me.warp * 32, lanes = L.nthreads - first < 32 ? L.nthreads - first : 32;
    const unsigned exists = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    char msg[160];
    if (!(mask >> lane & 1)) {
        snprintf(msg, sizeof msg, "%s: the calling lane %u is not in mask 0x%08x", kind_name(kind),
                 lane, mask);
        fail(msg);
    } else if (mask & ~exists) {
        snprintf(msg, sizeof msg, "%s: mask 0x%08x names lanes past the block's last thread",
                 kind_name(kind), mask);
        fail(msg);
    } else if (width < 1 || width > 32 || (width & (width - 1))) {
        snprintf(msg, sizeof msg, "%s: width %d is not a power of two up to 32", kind_name(kind),
                 width);
        fail(msg);
    } else if (w.arrived && (w.mask != mask || w.kind != kind || w.width != width)) {
        snprintf(msg, sizeof msg, "%s with mask 0x%08x meets %s with mask 0x%08x in one warp",
                 kind_name(kind), mask, kind_name(w.kind), w.mask);
        fail(msg);
    }
    if (L.failed) {
        wait_here(WAIT_WARP);  // never resumed: the launch stops
        return 0;
    }
    w.mask = mask, w.kind = kind, w.width = width;
    w.val[lane] = v, w.param[lane] = param;
    w.arrived |= 1u << lane;
    if (w.arrived == mask) {
        warp_results(w);
        w.arrived = 0;
        for (unsigned l = 0; l < lanes; ++l)
            if ((mask >> l & 1) && l != lane) wake(first + l);
    } else {
        wait_here(WAIT_WARP);
    }
    return w.res[lane];
}

}  // namespace

extern "C" {

void emu_syncthreads(void) { emu_syncthreads_reduce(0, 0); }

int emu_syncthreads_reduce(int op, int pred) {
    if (L.block_waiting == 0) {
        L.block_op = op;
        L.block_acc = op == 1 ? 1 : 0;
    } else if (L.block_op != op) {
        fail("__syncthreads and __syncthreads_count/and/or meet at one barrier");
    }
    pred = pred != 0;
    L.block_acc = op == 0 ? L.block_acc + pred : op == 1 ? (L.block_acc & pred) : (L.block_acc | pred);
    ++L.block_waiting;
    if (!L.failed && L.block_waiting == L.nthreads - L.exited)
        release_block_barrier(L.current->tid);
    else
        wait_here(WAIT_BLOCK);
    return L.block_result;
}

void emu_cp_async(void* dst, const void* src, int bytes, int src_bytes, int cache_global) {
    const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    if (bytes != 4 && bytes != 8 && bytes != 16) {
        fail("cp.async: cp-size must be 4, 8 or 16 bytes");
    } else if (cache_global && bytes != 16) {
        fail("cp.async.cg: cp-size must be 16 bytes");
    } else if (src_bytes < 0 || src_bytes > bytes) {
        fail("cp.async: src-size must lie in 0 .. cp-size");
    } else if (d % bytes || (src_bytes && s % bytes)) {
        fail("cp.async: an address is not aligned to cp-size");
    }
    if (L.failed) wait_here(WAIT_WARP);  // never resumed: the launch stops
    AsyncCopy c = {static_cast<unsigned char*>(dst), {}, bytes};
    if (src_bytes) memcpy(c.data, src, src_bytes);
    memset(dst, kPoison, bytes);
    L.async_open[emu_cur - L.threads.data()].push_back(c);
}

void emu_cp_async_commit(void) {
    const size_t t = emu_cur - L.threads.data();
    L.async_groups[t].push_back(AsyncGroup());
    L.async_groups[t].back().swap(L.async_open[t]);
}

// cp.async.wait_group N: every committed group but the N most recent lands.
void emu_cp_async_wait(int pending) {
    std::deque<AsyncGroup>& groups = L.async_groups[emu_cur - L.threads.data()];
    while ((int)groups.size() > pending) {
        for (const AsyncCopy& c : groups.front()) memcpy(c.dst, c.data, c.bytes);
        groups.pop_front();
    }
}

void emu_syncwarp(unsigned int mask) { warp_exchange(mask, EMU_SYNCWARP, 0, 0, 32); }

unsigned long long emu_warp_exchange(unsigned int mask, int kind, unsigned long long v, int param,
                                     int width) {
    return warp_exchange(mask, kind, v, param, width);
}

unsigned int emu_activemask(void) {
    const unsigned first = emu_cur->warp * 32;
    unsigned m = 0;
    for (unsigned l = 0; l < 32 && first + l < L.nthreads; ++l)
        if (L.state[first + l] != EXITED) m |= 1u << l;
    return m;
}

void emu_trap(const char* what) {
    fail(std::string("the kernel executed ") + what);
    wait_here(WAIT_WARP);  // never resumed
    abort();
}

void emu_mma_m16n8k32_s8(int* d, const unsigned int* a, const unsigned int* b, const int* c) {
    MmaLane lane = {d, a, b, c};
    warp_exchange(0xffffffffu, EMU_MMA, reinterpret_cast<uintptr_t>(&lane), 0, 32);
}

void emu_ldmatrix(unsigned int* r, int count, int trans, const void* row_address) {
    if (count != 1 && count != 2 && count != 4) {
        fail("ldmatrix: .num must be x1, x2 or x4");
        wait_here(WAIT_WARP);
    }
    LdmLane lane = {r, count, trans, static_cast<const unsigned char*>(row_address)};
    warp_exchange(0xffffffffu, EMU_LDMATRIX, reinterpret_cast<uintptr_t>(&lane), 0, 32);
}

// Run the grid; 0 on success, else -1 and the reason in err.
__attribute__((visibility("default"))) int emu_launch(void (*call)(void**), void** args,
                                                      const unsigned* grid, const unsigned* block,
                                                      char* err, int errlen) {
    const unsigned n = block[0] * block[1] * block[2];
    L.call = call, L.args = args, L.nthreads = n;
    L.threads.assign(n, emu_thread());
    for (unsigned t = 0; t < n; ++t) {
        emu_thread& th = L.threads[t];
        th.tid = {t % block[0], t / block[0] % block[1], t / (block[0] * block[1])};
        th.bdim = {block[0], block[1], block[2]};
        th.gdim = {grid[0], grid[1], grid[2]};
        th.lane = t % 32, th.warp = t / 32;
    }
    L.failed = false;
    L.error.clear();
    L.current = nullptr;
    std::vector<Fiber*> used;
    for (unsigned bz = 0; bz < grid[2] && !L.failed; ++bz)
        for (unsigned by = 0; by < grid[1] && !L.failed; ++by)
            for (unsigned bx = 0; bx < grid[0] && !L.failed; ++bx) {
                for (emu_thread& th : L.threads) th.bid = {bx, by, bz};
                L.state.assign(n, NOT_STARTED);
                L.fiber_of.assign(n, nullptr);
                L.warps.assign((n + 31) / 32, Warp());
                L.async_open.assign(n, AsyncGroup());
                L.async_groups.assign(n, std::deque<AsyncGroup>());
                L.next_tid = L.exited = L.block_waiting = 0;
                L.runnable.clear();
                for (;;) {
                    Fiber* f;
                    if (L.failed) break;
                    if (!L.runnable.empty()) {
                        f = L.runnable.front();
                        L.runnable.pop_front();
                    } else if (L.next_tid < n) {
                        f = new_fiber();
                        used.push_back(f);
                    } else {
                        break;
                    }
                    L.current = f;
                    to_fiber(f);
                }
                if (!L.failed && L.exited < n) {
                    unsigned t = 0;
                    while (L.state[t] == EXITED) ++t;
                    L.current = L.fiber_of[t];
                    fail(L.state[t] == WAIT_BLOCK
                             ? "deadlock: __syncthreads waits for threads that never reach it"
                             : "deadlock: a warp collective waits for lanes that never reach it");
                }
            }
    // Fibers of a failed launch stop mid-thread: free them rather than reuse them.
    for (Fiber* f : used) {
        if (f->idle && !L.failed) pool.push_back(f);
        else free_fiber(f);
    }
    emu_cur = nullptr;
    if (L.failed) {
        snprintf(err, errlen, "%s", L.error.c_str());
        return -1;
    }
    return 0;
}

}  // extern "C"
