// Scheduler of the CPU emulator. Blocks of a launch run one after another; the
// threads of a block start as a plain loop on one fiber, and a thread that has to
// wait (__syncthreads, a warp collective) keeps that fiber while the loop continues
// on a fresh one, so kernels without barriers never switch. Waiting threads resume
// when their barrier or collective is complete. When nothing can run, the launch
// fails with a description of who waits for whom instead of hanging. A thread that
// spins (atomics that change nothing) yields to the others; a spin no thread of the
// block can end is a deadlock too. A thread that spins on plain or volatile loads
// never calls in here: the watchdog (watchdog.cpp) catches it and it yields the same way.
#include "emu_types.h"
#include "emu_sync.h"
#include "emu_runtime.h"
#include "emu_check.h"
#include "fiber.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint3 __emu_threadIdx, __emu_blockIdx;
dim3 __emu_blockDim, __emu_gridDim;
int __emu_tid;
alignas(256) unsigned char __emu_dynamic_smem[EMU_MAX_DYNAMIC_SMEM];
int __emu_spin_budget = 1 << 30;
unsigned long long __emu_race_epoch;
unsigned int __emu_race_warp[EMU_MAX_THREADS / 32];
int __emu_spin_effect;
const void* __emu_spin_addr;
extern const int __emu_table_size;  // generated with the kernel table

namespace {

enum State : unsigned char { UNSTARTED, RUNNING, READY, AT_BARRIER, AT_WARP_OP, AT_ACTIVEMASK, SPINNING, EXITED };
constexpr int kSpinBudget = 256;       // atomics between two spin checks
constexpr int kStaleRounds = 4096;     // spin checks of a whole block without progress: deadlock

struct Thread {
    Fiber* fiber;
    unsigned char state;
    unsigned char op;      // warp collective it waits at
    unsigned int mask;     // the lanes that collective names (existing lanes only)
    int src;               // shuffle: lane whose value it receives, -1 for its own
    int site;              // __activemask call site
    unsigned long long value, result;
};

struct Site {              // where a thread waits or spins, for checks and messages (kept out of
    const char* bar_file;  // Thread, which the scheduler's loops walk): the __syncthreads it
    int bar_line;          // waits at (synccheck) and the atomic it spun on
    const void* spin_addr;
};

constexpr int kMaxWarps = EMU_MAX_THREADS / 32;

struct Block {
    const __emu_config* cfg;
    void (*body)(void*);
    void* ctx;
    int n;                    // threads per block
    int next;                 // next thread to start
    int exited;
    int arrived, arrived_true;  // at __syncthreads now; how many with a nonzero predicate
    int bar_total, bar_true;    // of the barrier released last
    int activemask_waiting;
    int spinning_len;                            // threads that yielded in a spin-wait
    unsigned long long progress, progress_seen;  // events that may end a spin
    int stale_rounds;
    int ready[EMU_MAX_THREADS], ready_head, ready_len;
    int bar_waiters[EMU_MAX_THREADS];
    unsigned int exists[kMaxWarps], exited_lanes[kMaxWarps], waiting_lanes[kMaxWarps];
    Thread t[EMU_MAX_THREADS];
    uint3 idx[EMU_MAX_THREADS];
    int spinning[EMU_MAX_THREADS];
    Site site[EMU_MAX_THREADS];
};

Block B;
// What the watchdog (watchdog.cpp) reads as activity, besides B's own counters.
unsigned long long g_block_serial, g_spin_checks;
unsigned long long g_yield_block, g_yield_progress;  // the watchdog's last yield of a spinning thread
Fiber g_main;     // the launching OS thread's own context
Fiber* g_cur;     // fiber running now
Fiber* g_dying;   // finished fiber, recycled once we are off its stack
bool g_in_launch, g_failed;
char g_error[8192];
char g_shared_fault[2048];  // a static __shared__ variable took the launch over the limit

const char* op_name(int op) {
    static const char* names[] = {"?", "__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync",
                                  "__match_any_sync", "__match_all_sync", "__reduce_add_sync",
                                  "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync",
                                  "__reduce_max_sync", "__reduce_and_sync", "__reduce_or_sync",
                                  "__reduce_xor_sync"};
    return op > 0 && op < __EMU_WARP_OP_END ? names[op] : "?";
}

// "thread (x,y,z)" of the current block, for messages.
const char* thread_str(int t, char* buf, size_t n) {
    snprintf(buf, n, "thread (%u,%u,%u) [warp %d lane %d]", B.idx[t].x, B.idx[t].y, B.idx[t].z, t >> 5, t & 31);
    return buf;
}

const char* state_str(int t, char* buf, size_t n) {
    const Thread& th = B.t[t];
    switch (th.state) {
        case AT_BARRIER: return "waits at __syncthreads";
        case AT_WARP_OP: snprintf(buf, n, "waits at %s (mask 0x%08x)", op_name(th.op), th.mask); return buf;
        case AT_ACTIVEMASK: return "waits at __activemask";
        case SPINNING: return "spins on an atomic";
        case EXITED: return "has exited";
        case UNSTARTED: return "has not started";
        default: return "is running";
    }
}

// Ends the launch: records the message and returns to the launching context.
[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char* fmt, ...) {
    int k = snprintf(g_error, sizeof g_error, "kernel '%s', block (%u,%u,%u): ", B.cfg->kernel,
                     __emu_blockIdx.x, __emu_blockIdx.y, __emu_blockIdx.z);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error + k, sizeof g_error - k, fmt, ap);
    va_end(ap);
    g_failed = true;
    Fiber* from = g_cur;
    g_cur = &g_main;
    fiber_switch(from, &g_main);
    abort();  // an abandoned fiber is never resumed
}

}  // namespace

const char* __emu_thread_name(int t, char* buf, size_t n) { return thread_str(t, buf, n); }

void __emu_fail_thread(const char* fmt, ...) {
    char a[96], msg[6144];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail("%s: %s", thread_str(__emu_tid, a, sizeof a), msg);
}

const __emu_config* __emu_current_launch(void) { return g_in_launch ? B.cfg : nullptr; }

namespace {

void recycle() {
    if (g_dying && g_dying != g_cur) {
        fiber_free(g_dying);
        g_dying = nullptr;
    }
}

void push_ready(int t) {
    B.t[t].state = READY;
    B.ready[(B.ready_head + B.ready_len++) % EMU_MAX_THREADS] = t;
}

void enter(int t) {  // make t the current CUDA thread
    B.t[t].state = RUNNING;
    __emu_tid = t;
    __emu_threadIdx = B.idx[t];
}

void switch_to(Fiber* to) {
    Fiber* from = g_cur;
    g_cur = to;
    if (to != from) fiber_switch(from, to);
    recycle();
}

void fiber_main();
[[noreturn]] void deadlock();
[[noreturn]] void spin_deadlock();
__attribute__((noinline)) bool release_activemask();
__attribute__((noinline)) bool resume_spinners();

// The current fiber cannot go on (its thread waits, or it finished): run something
// else. Returns when the current thread may continue.
void schedule() {
    for (;;) {
        if (B.ready_len) {
            int t = B.ready[B.ready_head];
            B.ready_head = (B.ready_head + 1) % EMU_MAX_THREADS;
            B.ready_len--;
            enter(t);
            switch_to(B.t[t].fiber);
            return;
        }
        if (B.next < B.n) {
            Fiber* f = fiber_alloc();
            if (!f) fail("out of memory for fiber stacks (%d threads wait at once)", B.next);
            fiber_prepare(f, fiber_main);
            switch_to(f);
            return;
        }
        if (B.exited == B.n) {  // block finished: back to the launch loop
            switch_to(&g_main);
            return;
        }
        if (release_activemask() || resume_spinners()) continue;
        deadlock();
    }
}

void release_barrier() {
    B.progress++;
    __emu_race_epoch++;
    B.bar_total = B.arrived;
    B.bar_true = B.arrived_true;
    for (int i = 0; i < B.arrived; ++i) {
        int w = B.bar_waiters[i];
        if (w == __emu_tid) B.t[w].state = RUNNING;  // the last to arrive goes straight on
        else push_ready(w);
    }
    B.arrived = B.arrived_true = 0;
}

const char* site_str(const char* file, int line, char* buf, size_t n) {
    snprintf(buf, n, "%s:%d", file ? file : "?", line);
    return buf;
}

int first_in_state(int state) {
    for (int t = 0; t < B.n; ++t)
        if (B.t[t].state == state) return t;
    return -1;
}

[[noreturn]] __attribute__((noinline, cold)) void shared_fault() {
    char msg[sizeof g_shared_fault];
    memcpy(msg, g_shared_fault, sizeof msg);
    g_shared_fault[0] = 0;
    fail("%s", msg);
}

[[noreturn]] __attribute__((noinline, cold)) void exited_before_barrier(int t) {
    int w = B.bar_waiters[0];
    char a[96], b[96], c[512];
    fail("synccheck: %s exited while %s waits at __syncthreads() at %s; every thread of a block must "
         "reach each barrier (no early return or divergent branch around it)", thread_str(t, a, sizeof a),
         thread_str(w, b, sizeof b), site_str(B.site[w].bar_file, B.site[w].bar_line, c, sizeof c));
}

// Inlined into the loop that runs threads: kernels without barriers run nothing else.
__attribute__((always_inline)) inline void thread_exited(int t) {
    if (g_shared_fault[0]) shared_fault();
    B.t[t].state = EXITED;
    B.exited++;
    if (B.arrived && (B.cfg->flags & EMU_CHECK_SYNC)) exited_before_barrier(t);
    int w = t >> 5;
    unsigned int bit = 1u << (t & 31);
    B.exited_lanes[w] |= bit;
    // A lane that waits for this one in a collective would wait forever.
    for (unsigned int m = B.waiting_lanes[w]; m; m &= m - 1) {
        int l = (w << 5) + __builtin_ctz(m);
        if (B.t[l].mask & bit) {
            char a[96], b[96];
            fail("%s exited while %s waits for it in %s (mask 0x%08x); every lane named in the mask must "
                 "call the collective", thread_str(t, a, sizeof a), thread_str(l, b, sizeof b),
                 op_name(B.t[l].op), B.t[l].mask);
        }
    }
    // Exited threads count as arrived at __syncthreads (as on Volta and later GPUs).
    if (B.arrived && B.arrived == B.n - B.exited) release_barrier();
}

// Every fiber runs this: start threads one after another until none is left.
void fiber_main() {
    recycle();
    Fiber* self = g_cur;
    while (B.next < B.n) {
        int t = B.next++;
        B.t[t].fiber = self;
        enter(t);
        B.body(B.ctx);
        thread_exited(t);
    }
    g_dying = self;
    schedule();
    abort();  // a finished fiber is never resumed
}

// All lanes of `mask` arrived at the same collective: compute every lane's result.
void complete_warp_op(int w, unsigned int mask, int op) {
    Thread* lanes = &B.t[w << 5];
    switch (op) {
        case __EMU_SYNCWARP:
            break;
        case __EMU_SHFL_IDX: case __EMU_SHFL_UP: case __EMU_SHFL_DOWN: case __EMU_SHFL_XOR:
            for (unsigned int m = mask; m; m &= m - 1) {
                Thread& th = lanes[__builtin_ctz(m)];
                // A source lane outside the mask is undefined on a GPU; give the lane its own value.
                th.result = th.src >= 0 && (mask >> th.src & 1) ? lanes[th.src].value : th.value;
            }
            break;
        case __EMU_MATCH_ANY:
            for (unsigned int m = mask; m; m &= m - 1) {
                Thread& th = lanes[__builtin_ctz(m)];
                unsigned int same = 0;
                for (unsigned int k = mask; k; k &= k - 1)
                    if (lanes[__builtin_ctz(k)].value == th.value) same |= 1u << __builtin_ctz(k);
                th.result = same;
            }
            break;
        case __EMU_MATCH_ALL: {
            bool equal = true;
            for (unsigned int m = mask; m; m &= m - 1) equal = equal && lanes[__builtin_ctz(m)].value == lanes[__builtin_ctz(mask)].value;
            for (unsigned int m = mask; m; m &= m - 1) lanes[__builtin_ctz(m)].result = equal ? mask : 0;
            break;
        }
        default: {  // votes and reductions: one value for every lane
            unsigned int votes = 0, acc = (unsigned int)lanes[__builtin_ctz(mask)].value;
            for (unsigned int m = mask; m; m &= m - 1) {
                int l = __builtin_ctz(m);
                unsigned int v = (unsigned int)lanes[l].value;
                if (lanes[l].value) votes |= 1u << l;
                switch (op) {
                    case __EMU_REDUCE_ADD: acc = m == mask ? v : acc + v; break;
                    case __EMU_REDUCE_MIN: acc = (int)v < (int)acc ? v : acc; break;
                    case __EMU_REDUCE_MAX: acc = (int)v > (int)acc ? v : acc; break;
                    case __EMU_REDUCE_UMIN: acc = v < acc ? v : acc; break;
                    case __EMU_REDUCE_UMAX: acc = v > acc ? v : acc; break;
                    case __EMU_REDUCE_AND: acc &= v; break;
                    case __EMU_REDUCE_OR: acc |= v; break;
                    case __EMU_REDUCE_XOR: acc = m == mask ? v : acc ^ v; break;
                }
            }
            unsigned long long r = op == __EMU_BALLOT ? votes : op == __EMU_ANY ? votes != 0
                                 : op == __EMU_ALL ? votes == mask : acc;
            for (unsigned int m = mask; m; m &= m - 1) lanes[__builtin_ctz(m)].result = r;
        }
    }
    B.waiting_lanes[w] &= ~mask;
    B.progress++;
    __emu_race_warp[w]++;
    for (unsigned int m = mask; m; m &= m - 1) {
        int t = (w << 5) + __builtin_ctz(m);
        if (t == __emu_tid) B.t[t].state = RUNNING;
        else push_ready(t);
    }
}

// Only lanes waiting at __activemask are left: give each group that reached the same
// call site its mask and let them go.
bool release_activemask() {
    if (!B.activemask_waiting) return false;
    for (int t = 0; t < B.n; ++t) {
        if (B.t[t].state != AT_ACTIVEMASK) continue;
        int w = t >> 5;
        unsigned int group = 0;
        for (int l = 0; l < 32 && (w << 5) + l < B.n; ++l) {
            const Thread& o = B.t[(w << 5) + l];
            if (o.state == AT_ACTIVEMASK && o.site == B.t[t].site) group |= 1u << l;
        }
        for (unsigned int m = group; m; m &= m - 1) {
            int u = (w << 5) + __builtin_ctz(m);
            B.t[u].result = group;
            push_ready(u);
        }
    }
    B.activemask_waiting = 0;
    B.progress++;
    return true;
}

// Only spinning threads can run: give them another round, unless rounds go by with
// nothing else happening in the block.
bool resume_spinners() {
    if (!B.spinning_len) return false;
    unsigned long long progress = B.progress + B.next + B.exited;  // starts and exits count too
    if (progress != B.progress_seen) {
        B.progress_seen = progress;
        B.stale_rounds = 0;
    } else if (++B.stale_rounds >= kStaleRounds) {
        spin_deadlock();
    }
    for (int i = 0; i < B.spinning_len; ++i) push_ready(B.spinning[i]);
    B.spinning_len = 0;
    return true;
}

// Ends the launch: `first` spins (on atomics, or on loads the watchdog saw) and no
// thread of the block can end that.
[[noreturn]] void report_spin_deadlock(int first) {
    int at_bar = 0, spinning = 0;
    for (int t = 0; t < B.n; ++t) {
        at_bar += B.t[t].state == AT_BARRIER;
        spinning += B.t[t].state == SPINNING || B.t[t].state == READY || t == first;
    }
    char a[96], what[160];
    if (B.site[first].spin_addr)
        snprintf(what, sizeof what, "repeats atomics that change nothing (the last at @addr=%p)",
                 B.site[first].spin_addr);
    else
        snprintf(what, sizeof what, "loops on memory without changing anything (a spin on a volatile or plain "
                 "load, seen by the watchdog)");
    fail("deadlock in a spin-wait: %s %s and no thread of the block can change that (%d spin, %d wait at "
         "__syncthreads, %d exited); blocks run one after another on the CPU emulator, so a value that a later "
         "block would write is never seen here, and a GPU does not promise that the blocks a spin-wait depends "
         "on run at the same time either", thread_str(first, a, sizeof a), what, spinning, at_bar, B.exited);
}

void spin_deadlock() {
    int first = -1;
    for (int t = 0; t < B.n && first < 0; ++t)  // an atomic spinner names the address
        if (B.t[t].state == SPINNING && B.site[t].spin_addr) first = t;
    report_spin_deadlock(first >= 0 ? first : first_in_state(SPINNING));
}

void deadlock() {
    int at_bar = 0, at_warp = 0, first = -1;
    for (int t = 0; t < B.n; ++t) {
        if (B.t[t].state == AT_BARRIER) at_bar++;
        if (B.t[t].state == AT_WARP_OP) {
            at_warp++;
            if (first < 0) first = t;
        }
    }
    char detail[1024] = "";
    if (first >= 0) {
        const Thread& th = B.t[first];
        int w = first >> 5, missing = -1;
        for (unsigned int m = th.mask; m; m &= m - 1) {
            const Thread& o = B.t[(w << 5) + __builtin_ctz(m)];
            if (o.state != AT_WARP_OP || o.op != th.op || o.mask != th.mask) {
                missing = (w << 5) + __builtin_ctz(m);
                break;
            }
        }
        char a[96], b[96], c[128];
        if (missing >= 0)
            snprintf(detail, sizeof detail, "; %s waits in %s (mask 0x%08x) for %s, which %s",
                     thread_str(first, a, sizeof a), op_name(th.op), th.mask, thread_str(missing, b, sizeof b),
                     state_str(missing, c, sizeof c));
    }
    fail("deadlock: no thread can continue (%d wait at __syncthreads, %d at warp collectives, %d exited)%s",
         at_bar, at_warp, B.exited, detail);
}

}  // namespace

// ---- entry points called from kernels (declared in emu_sync.h) ---------------------

namespace {
// synccheck, as a thread arrives at a barrier: nobody exited, and the others wait at the same one.
__attribute__((noinline)) void sync_check_arrival(int t, const char* file, int line) {
    char a[96], b[96], c[512], d[512];
    if (B.exited) {
        int e = first_in_state(EXITED);
        fail("synccheck: %s reaches __syncthreads() at %s, but %s exited without reaching it; every thread "
             "of a block must reach each barrier (no early return or divergent branch around it)",
             thread_str(t, a, sizeof a), site_str(file, line, c, sizeof c), thread_str(e, b, sizeof b));
    }
    if (B.arrived) {
        int w = B.bar_waiters[0];
        if (B.site[w].bar_line != line || B.site[w].bar_file != file)
            fail("synccheck: divergent barriers: %s reaches __syncthreads() at %s while %s waits at the one at "
                 "%s; all threads of a block must wait at the same barrier",
                 thread_str(t, a, sizeof a), site_str(file, line, c, sizeof c), thread_str(w, b, sizeof b),
                 site_str(B.site[w].bar_file, B.site[w].bar_line, d, sizeof d));
    }
}
}  // namespace

int __emu_barrier(int kind, int pred, const char* file, int line) {
    int t = __emu_tid;
    if (g_shared_fault[0]) shared_fault();
    if (B.cfg->flags & EMU_CHECK_SYNC) sync_check_arrival(t, file, line);
    B.site[t].bar_file = file;
    B.site[t].bar_line = line;
    B.t[t].state = AT_BARRIER;
    B.bar_waiters[B.arrived++] = t;
    B.arrived_true += pred != 0;
    if (B.arrived == B.n - B.exited) release_barrier();
    else schedule();
    // The next barrier cannot complete before this thread arrives there, so the
    // results of the last one are still in place.
    switch (kind) {
        case __EMU_BAR_COUNT: return B.bar_true;
        case __EMU_BAR_AND: return B.bar_true == B.bar_total;
        case __EMU_BAR_OR: return B.bar_true != 0;
        default: return 0;
    }
}

unsigned long long __emu_warp(int op, unsigned int mask, unsigned long long value, int src) {
    int t = __emu_tid, w = t >> 5;
    unsigned int bit = 1u << (t & 31), m = mask & B.exists[w];
    char a[96];
    if (!(m & bit))
        fail("%s calls %s with mask 0x%08x, which does not name the calling lane", thread_str(t, a, sizeof a),
             op_name(op), mask);
    if (m & B.exited_lanes[w]) {
        char b[96];
        fail("%s calls %s with mask 0x%08x, but %s has already exited", thread_str(t, a, sizeof a), op_name(op),
             mask, thread_str((w << 5) + __builtin_ctz(m & B.exited_lanes[w]), b, sizeof b));
    }
    Thread& th = B.t[t];
    th.state = AT_WARP_OP;
    th.op = (unsigned char)op;
    th.mask = m;
    th.value = value;
    th.src = src;
    B.waiting_lanes[w] |= bit;
    bool complete = (B.waiting_lanes[w] & m) == m;
    for (unsigned int k = m; complete && k; k &= k - 1) {
        const Thread& o = B.t[(w << 5) + __builtin_ctz(k)];
        complete = o.op == op && o.mask == m;
    }
    if (complete) complete_warp_op(w, m, op);
    else schedule();
    return th.result;
}

extern "C" void __emu_spin_check(void) {
    __emu_spin_budget = kSpinBudget;
    g_spin_checks++;
    bool changed = __emu_spin_effect;
    __emu_spin_effect = 0;
    if (!g_in_launch) return;
    if (changed) {
        B.progress++;
        return;
    }
    int t = __emu_tid;
    B.t[t].state = SPINNING;
    B.site[t].spin_addr = __emu_spin_addr;
    B.spinning[B.spinning_len++] = t;
    schedule();
}

// ---- the watchdog's view (watchdog.cpp) ----------------------------------------------

bool __emu_watch_in_launch() { return __atomic_load_n(&g_in_launch, __ATOMIC_RELAXED); }

// Changes whenever a thread of the launch starts or exits, a barrier or collective
// completes, or a thread spins on atomics. (A switch to another waiting thread changes
// the stack pointer the watchdog compares, so switches need no count.)
unsigned long long __emu_watch_activity() {
    const unsigned long long v[] = {__atomic_load_n(&g_block_serial, __ATOMIC_RELAXED),
                                    (unsigned long long)__atomic_load_n(&B.next, __ATOMIC_RELAXED),
                                    (unsigned long long)__atomic_load_n(&B.exited, __ATOMIC_RELAXED),
                                    __atomic_load_n(&B.progress, __ATOMIC_RELAXED),
                                    __atomic_load_n(&g_spin_checks, __ATOMIC_RELAXED)};
    unsigned long long h = 0;
    for (unsigned long long x : v) h = h * 1000003u ^ x;
    return h;
}

// The current thread loops on memory without calling into the runtime (the watchdog's
// signal handler saw it twice in the same state): let the other threads of the block
// run, as a spin on an atomic does; when none can, or they changed nothing since this
// thread last yielded, nothing will ever end the loop.
void __emu_watch_spin(const void*) {
    int t = __emu_tid;
    unsigned long long progress = B.progress + B.next + B.exited;
    bool others = B.ready_len || B.next < B.n || B.spinning_len || B.activemask_waiting;
    if (!others || (g_yield_block == g_block_serial && g_yield_progress == progress)) {
        B.site[t].spin_addr = nullptr;
        report_spin_deadlock(t);
    }
    g_yield_block = g_block_serial;
    g_yield_progress = progress;
    B.t[t].state = SPINNING;
    B.site[t].spin_addr = nullptr;
    B.spinning[B.spinning_len++] = t;
    schedule();
}

namespace {
unsigned int* g_static_shared;  // static __shared__ bytes of each kernel of the table, as seen so far
constexpr unsigned int kStaticSharedLimit = 48 * 1024;

// The launch's shared memory is over a GPU's limits: the message, or nullptr.
const char* shared_over_limit(char* buf, size_t n) {
    const __emu_config* cfg = B.cfg;
    unsigned int st = g_static_shared ? g_static_shared[cfg->index] : 0;
    if (st > kStaticSharedLimit)
        snprintf(buf, n, "%u bytes of static __shared__ memory; a GPU allows at most %u bytes (48 KB) of "
                 "static shared memory per block (use extern __shared__ with an opt-in for more)", st,
                 kStaticSharedLimit);
    else if ((unsigned long long)st + cfg->shared_bytes > cfg->shared_limit)
        snprintf(buf, n, "%u bytes of static __shared__ memory + shared_mem=%u bytes is over the %u bytes a "
                 "GPU gives a block%s", st, cfg->shared_bytes, cfg->shared_limit,
                 cfg->shared_limit <= kStaticSharedLimit
                     ? " without an opt-in (set kernel.max_dynamic_shared_size_bytes, as cudaFuncSetAttribute "
                       "does)" : "");
    else
        return nullptr;
    return buf;
}
}  // namespace

// Called while a static local is initialised (the C++ guard is held), so a launch over
// the limit fails at the thread's next barrier or exit, not here.
void __emu_note_static_shared(size_t bytes, const char* name, const char* file, int line) {
    if (!g_in_launch) return;  // file-scope __shared__: not attributed to a kernel
    if (!g_static_shared) g_static_shared = (unsigned int*)calloc(__emu_table_size + 1, sizeof(unsigned int));
    if (!g_static_shared) return;
    g_static_shared[B.cfg->index] += (unsigned int)bytes;
    char msg[1024], c[512];
    if (shared_over_limit(msg, sizeof msg))
        snprintf(g_shared_fault, sizeof g_shared_fault, "%s (__shared__ %s at %s is %zu bytes)", msg, name,
                 site_str(file, line, c, sizeof c), bytes);
}

unsigned int __emu_activemask(int site) {
    Thread& th = B.t[__emu_tid];
    th.state = AT_ACTIVEMASK;
    th.site = site;
    B.activemask_waiting++;
    schedule();
    return (unsigned int)th.result;
}

void __emu_fail_bad_width(int width) {
    char a[96];
    fail("%s: shuffle width %d is not a power of two in 1..32", thread_str(__emu_tid, a, sizeof a), width);
}

void __trap(void) {
    char a[96];
    fail("%s called __trap()", thread_str(__emu_tid, a, sizeof a));
}

void __brkpt(void) {
    char a[96];
    fail("%s called __brkpt()", thread_str(__emu_tid, a, sizeof a));
}

// Device-side assert(): glibc's assert macro calls this; the kernel library binds to
// this definition, so a failed assert fails the launch instead of aborting Python.
extern "C" [[noreturn]] void __assert_fail(const char* expr, const char* file, unsigned int line,
                                           const char* func) noexcept {
    if (!g_in_launch) {
        fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, func, expr);
        abort();
    }
    char a[96];
    fail("%s: assertion `%s' failed at %s:%u in %s", thread_str(__emu_tid, a, sizeof a), expr, file, line, func);
}

// ---- the launch loop ---------------------------------------------------------------

int __emu_run_grid(const __emu_config* cfg, void (*body)(void*), void* ctx) {
    if (g_in_launch) {  // another Python thread; kernels/emu serialises launches
        snprintf(g_error, sizeof g_error, "kernel '%s': launched while another launch runs", cfg->kernel);
        return -1;
    }
    B.cfg = cfg;
    g_failed = false;
    g_shared_fault[0] = 0;
    const unsigned int* bd = cfg->block;
    unsigned long long n = (unsigned long long)bd[0] * bd[1] * bd[2];
    if (n < 1 || n > EMU_MAX_THREADS || cfg->shared_bytes > EMU_MAX_DYNAMIC_SMEM) {
        snprintf(g_error, sizeof g_error, "kernel '%s': invalid launch configuration", cfg->kernel);
        return -1;
    }
    B.body = body;
    B.ctx = ctx;
    B.n = (int)n;
    char over[1024];
    if (shared_over_limit(over, sizeof over)) {
        snprintf(g_error, sizeof g_error, "kernel '%s': %s", cfg->kernel, over);
        return -1;
    }
    for (int t = 0; t < B.n; ++t) {
        B.idx[t] = uint3{t % bd[0], (t / bd[0]) % bd[1], t / (bd[0] * bd[1])};
        B.t[t].state = UNSTARTED;
    }
    for (int w = 0; w < kMaxWarps; ++w) {
        int lanes = B.n - 32 * w;
        B.exists[w] = lanes >= 32 ? 0xffffffffu : lanes > 0 ? (1u << lanes) - 1 : 0;
    }
    __emu_blockDim = dim3(bd[0], bd[1], bd[2]);
    __emu_gridDim = dim3(cfg->grid[0], cfg->grid[1], cfg->grid[2]);
    unsigned char* dynamic_smem = __emu_dynamic_smem;
    if (cfg->flags & EMU_CHECK_MEM) {
        dynamic_smem = __emu_check_launch_begin(cfg->shared_bytes, cfg->flags & EMU_CHECK_RACE);
        if (!dynamic_smem) {
            snprintf(g_error, sizeof g_error, "kernel '%s': memcheck could not reserve its arena", cfg->kernel);
            return -1;
        }
    }
    fiber_capture_fp_state();
    __emu_watch_launch();
    g_in_launch = true;
    for (unsigned int z = 0; z < cfg->grid[2] && !g_failed; ++z)
        for (unsigned int y = 0; y < cfg->grid[1] && !g_failed; ++y)
            for (unsigned int x = 0; x < cfg->grid[0] && !g_failed; ++x) {
                __emu_blockIdx = uint3{x, y, z};
                g_block_serial++;
                __emu_race_epoch++;
                if (cfg->flags & EMU_POISON_SHARED) memset(dynamic_smem, 0xff, cfg->shared_bytes);
                B.next = B.exited = B.arrived = B.arrived_true = 0;
                B.ready_head = B.ready_len = B.activemask_waiting = 0;
                B.spinning_len = B.stale_rounds = 0;
                B.progress = B.progress_seen = 0;
                __emu_spin_budget = kSpinBudget;
                __emu_spin_effect = 0;
                memset(B.exited_lanes, 0, sizeof B.exited_lanes);
                memset(B.waiting_lanes, 0, sizeof B.waiting_lanes);
                Fiber* f = fiber_alloc();
                if (!f) {
                    snprintf(g_error, sizeof g_error, "kernel '%s': out of memory for fiber stacks", cfg->kernel);
                    g_failed = true;
                    break;
                }
                fiber_prepare(f, fiber_main);
                g_cur = &g_main;
                switch_to(f);
                if (g_failed) break;
            }
    g_in_launch = false;
    __emu_spin_budget = 1 << 30;  // atomics outside launches (static initialisers) never spin-check
    g_cur = nullptr;
    g_dying = nullptr;
    fflush(stdout);
    if (g_failed) {
        fiber_free_all();  // the fibers of waiting threads are abandoned
        return -1;
    }
    return 0;
}

const char* emu_last_error(void) { return g_error; }

// ---- fiber switch benchmark --------------------------------------------------------

namespace {
Fiber* g_bench[2];
long g_bench_left;
void bench_ping() {
    while (g_bench_left-- > 0) fiber_switch(g_bench[0], g_bench[1]);
    fiber_switch(g_bench[0], &g_main);
}
void bench_pong() {
    for (;;) fiber_switch(g_bench[1], g_bench[0]);
}
double now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}
}  // namespace

double emu_fiber_switch_ns(int n) {
    fiber_capture_fp_state();
    g_bench[0] = fiber_alloc();
    g_bench[1] = fiber_alloc();
    if (!g_bench[0] || !g_bench[1]) return -1;
    fiber_prepare(g_bench[0], bench_ping);
    fiber_prepare(g_bench[1], bench_pong);
    g_bench_left = n;
    double t0 = now_ns();
    fiber_switch(&g_main, g_bench[0]);
    double t1 = now_ns();
    fiber_free(g_bench[1]);
    fiber_free(g_bench[0]);
    return (t1 - t0) / (2.0 * n + 2);
}
