// memcheck for the CPU emulator. A library built for memcheck is compiled with
// -fsanitize=kernel-address and every access outside the stack calls one of the
// __asan_* functions below (kernels/emu/build.py). They hold the address against
// the regions a kernel may use: its array arguments (which kernels/emu/library.py
// copies into a guarded arena for the launch) and its shared memory (__shared__
// variables and the dynamic shared memory, which source.py places in a guarded arena
// here). An access that falls in an arena but in none of its regions, or near address
// 0, ends the launch with a message naming the region it missed and the code offset
// of the access ("@pc=0x..."), which library.py turns into a source line.
// racecheck builds use -fsanitize=thread instead (the __tsan_* functions, same checks)
// and also follow who touched each byte of shared memory in which epoch (race()).
#include "emu_types.h"
#include "emu_runtime.h"
#include "emu_check.h"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

extern "C" {
extern __EMU_HIDDEN int __emu_spin_effect;
extern __EMU_HIDDEN const void* __emu_spin_addr;
__EMU_HIDDEN void __emu_spin_check(void);
}

namespace {

struct Shadow;

struct Region {
    uintptr_t beg, size;
    const char* label;
    Shadow* shadow;  // racecheck: one per byte, allocated at the region's first checked access
};

constexpr int kMaxArgs = 256;
Region g_args[kMaxArgs];  // the launch's array arguments, inside the arena library.py made
int g_nargs;
uintptr_t g_args_lo, g_args_span;

constexpr size_t kArena = 256u << 20;  // address space for shared memory (touched pages only)
constexpr size_t kGap = 64u << 10;     // unused bytes around every region
constexpr int kMaxShared = 4096;
char* g_arena;
size_t g_arena_used;
Region g_shared[kMaxShared];  // [0]: the dynamic shared memory; then __shared__ variables
int g_nshared;
char g_dyn_label[512];
const char* g_dyn_name;

uintptr_t g_last_load;  // volatile spin-waits: the same address loaded again and again
int g_same_loads;
constexpr int kSpinLoads = 4096;

bool arena() {
    if (g_arena) return true;
    void* p = mmap(nullptr, kArena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    g_arena = (char*)p;
    g_shared[0] = Region{(uintptr_t)g_arena + kGap, 0, g_dyn_label, nullptr};
    g_nshared = 1;
    g_arena_used = 2 * kGap + EMU_MAX_DYNAMIC_SMEM;
    return true;
}

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

[[noreturn]] void report(uintptr_t a, size_t n, bool write, const void* pc, const Region* regions, int count) {
    const Region* best = nullptr;
    long long best_dist = 0;
    bool after = true;
    for (int i = 0; i < count; ++i) {  // the nearest region: the one the access missed
        const Region& r = regions[i];
        bool past = a + n > r.beg + r.size;
        long long d = past ? (long long)(a + n - (r.beg + r.size)) : (long long)(r.beg - a);
        if (!best || d < best_dist) best = &r, best_dist = d, after = past;
    }
    if (regions == g_shared)
        snprintf(g_dyn_label, sizeof g_dyn_label, "dynamic shared memory (extern __shared__%s%s; the launch gave "
                 "shared_mem=%zu bytes)", g_dyn_name ? " " : "", g_dyn_name ? g_dyn_name : "",
                 (size_t)g_shared[0].size);
    Dl_info info;
    uintptr_t base = dladdr(pc, &info) && info.dli_fbase ? (uintptr_t)info.dli_fbase : 0;
    const char* what = write ? "write" : "read";
    uintptr_t off = (uintptr_t)pc - base - 1;  // inside the call instruction
    if (!best)
        __emu_fail_thread("memcheck: invalid %s of %zu bytes at address 0x%lx @pc=0x%lx", what, n,
                          (unsigned long)a, (unsigned long)off);
    if (after) {
        long long past = (long long)a - (long long)(best->beg + best->size);
        if (past >= 0)
            __emu_fail_thread("memcheck: invalid %s of %zu bytes, %lld bytes past the end of %s @pc=0x%lx", what,
                              n, past, best->label, (unsigned long)off);
        __emu_fail_thread("memcheck: invalid %s of %zu bytes at byte %lld of %s, which runs past its end "
                          "@pc=0x%lx", what, n, (long long)(a - best->beg), best->label, (unsigned long)off);
    }
    __emu_fail_thread("memcheck: invalid %s of %zu bytes, %lld bytes before the start of %s @pc=0x%lx", what, n,
                      (long long)(best->beg - a), best->label, (unsigned long)off);
}

// Whether [a, a + n) lies in one of the regions; `last` (the one that held the previous
// access) is tried first, as consecutive accesses mostly go to the same array.
inline bool inside(uintptr_t a, size_t n, const Region* regions, int count, int& last) {
    const Region& r = regions[last];
    if (a - r.beg < r.size && a + n <= r.beg + r.size) return true;
    for (int i = 0; i < count; ++i)
        if (a - regions[i].beg < regions[i].size && a + n <= regions[i].beg + regions[i].size) {
            last = i;
            return true;
        }
    return false;
}
int g_last_arg, g_last_shared;

// ---- racecheck: two threads touch a byte of shared memory between barriers, one writes.
// Each byte keeps its last write and its last read (plus whether another thread read it
// in the same epoch); an access is ordered after them when the epoch moved on
// (emu_runtime.h) or, for lanes of one warp, when the warp completed a collective.

struct Access {
    unsigned long long epoch;  // 0: none
    unsigned int warp_count;   // the warp's collectives completed when it happened
    unsigned int pc;           // code offset
    int tid;
};
struct Shadow {
    Access write, read;
    int other_reader;  // another thread that read in read.epoch, or -1
};
bool g_race;

unsigned int code_offset(const void* pc) {
    static uintptr_t base;
    if (!base) {
        Dl_info info;
        base = dladdr((const void*)&code_offset, &info) && info.dli_fbase ? (uintptr_t)info.dli_fbase : 1;
    }
    return (unsigned int)((uintptr_t)pc - base - 1);  // inside the call instruction
}

inline bool unordered(const Access& before, int t) {
    if (before.epoch != __emu_race_epoch || before.tid == t) return false;
    return (before.tid >> 5) != (t >> 5) || before.warp_count == __emu_race_warp[t >> 5];
}

[[noreturn]] __attribute__((noinline, cold)) void race_report(const Region& r, uintptr_t offset, bool write,
                                                             const void* pc, const Access& other, bool other_wrote) {
    char name[96];
    const char* kind = other_wrote ? (write ? "write-after-write" : "read-after-write") : "write-after-read";
    if (&r == &g_shared[0])
        snprintf(g_dyn_label, sizeof g_dyn_label, "dynamic shared memory (extern __shared__%s%s)",
                 g_dyn_name ? " " : "", g_dyn_name ? g_dyn_name : "");
    __emu_fail_thread("racecheck: %s hazard at byte %lu of %s: this thread %s it @pc=0x%x and %s %s it @pc=0x%x, "
                      "with no __syncthreads() (or __syncwarp() within a warp) between", kind,
                      (unsigned long)offset, r.label, write ? "writes" : "reads", code_offset(pc),
                      __emu_thread_name(other.tid, name, sizeof name), other_wrote ? "wrote" : "read", other.pc);
}

__attribute__((noinline)) void race(uintptr_t a, size_t n, bool write, const void* pc, Region& r) {
    if (!r.shadow) {
        size_t bytes = &r == &g_shared[0] ? EMU_MAX_DYNAMIC_SMEM : r.size;
        r.shadow = (Shadow*)calloc(bytes ? bytes : 1, sizeof(Shadow));
        if (!r.shadow) return;
    }
    int t = __emu_tid;
    Access now{__emu_race_epoch, __emu_race_warp[t >> 5], 0, t};
    for (size_t i = 0; i < n; ++i) {
        uintptr_t offset = a - r.beg + i;
        Shadow& s = r.shadow[offset];
        if (unordered(s.write, t)) race_report(r, offset, write, pc, s.write, true);
        if (write) {
            if (unordered(s.read, t)) race_report(r, offset, write, pc, s.read, false);
            if (s.read.epoch == now.epoch && s.other_reader >= 0 && s.other_reader != t) {
                Access other = s.read;
                other.tid = s.other_reader;
                if (unordered(other, t)) race_report(r, offset, write, pc, other, false);
            }
            if (!now.pc) now.pc = code_offset(pc);
            s.write = now;
        } else if (s.read.epoch != now.epoch) {
            if (!now.pc) now.pc = code_offset(pc);
            s.read = now;
            s.other_reader = -1;
        } else if (s.read.tid != t && s.other_reader < 0) {
            s.other_reader = t;
        }
    }
}

inline void check(uintptr_t a, size_t n, bool write, const void* pc) {
    if (a - g_args_lo < g_args_span) {
        if (!inside(a, n, g_args, g_nargs, g_last_arg)) report(a, n, write, pc, g_args, g_nargs);
    } else if (g_arena && a - (uintptr_t)g_arena < kArena) {
        if (!inside(a, n, g_shared, g_nshared, g_last_shared)) report(a, n, write, pc, g_shared, g_nshared);
        if (g_race && !__emu_race_in_atomic) race(a, n, write, pc, g_shared[g_last_shared]);
    } else if (a < 65536 && __emu_current_launch()) {
        report(a, n, write, pc, nullptr, 0);
    }
    if (write) {
        g_same_loads = 0;
    } else if (a != g_last_load) {
        g_last_load = a;
        g_same_loads = 0;
    } else if (++g_same_loads >= kSpinLoads) {  // a spin-wait on a plain (volatile) load
        g_same_loads = 0;
        __emu_spin_addr = (const void*)a;
        __emu_spin_check();
    }
}

}  // namespace

extern "C" {

// Python (library.py) names the arena regions of a launch's array arguments; n = 0 clears them.
EMU_EXPORT void emu_check_set_args(int n, const uintptr_t* beg, const uintptr_t* size, const char** labels,
                                   uintptr_t lo, uintptr_t hi) {
    g_nargs = n < kMaxArgs ? n : kMaxArgs;
    for (int i = 0; i < g_nargs; ++i) g_args[i] = Region{beg[i], size[i], labels[i], nullptr};
    g_args_lo = n ? lo : 0;
    g_args_span = n ? hi - lo : 0;
    g_last_load = 0;
    g_last_arg = 0;
}

void* __emu_check_shared(size_t bytes, const char* name, const char* file, int line) {
    __emu_note_static_shared(bytes, name, file, line);
    if (!arena() || g_nshared == kMaxShared || g_arena_used + round_up(bytes, 256) + kGap > kArena) {
        fprintf(stderr, "mpicnn emulator: memcheck is out of address space for __shared__ %s\n", name);
        abort();
    }
    char* p = g_arena + g_arena_used;
    g_arena_used += round_up(bytes ? bytes : 1, 256) + kGap;
    char* label = (char*)malloc(strlen(name) + strlen(file) + 96);
    sprintf(label, "__shared__ %s (%zu bytes, declared at %s:%d)", name, bytes, file, line);
    g_shared[g_nshared++] = Region{(uintptr_t)p, bytes, label, nullptr};
    return p;
}

int __emu_race_in_atomic;

unsigned char* __emu_check_launch_begin(unsigned int shared_bytes, int race) {
    if (!arena()) return nullptr;
    g_race = race != 0;
    g_shared[0].size = shared_bytes;
    g_last_load = 0;
    return (unsigned char*)g_shared[0].beg;
}

unsigned char* __emu_check_dynamic_smem(const char* name) {
    if (!arena()) return nullptr;
    if (name) g_dyn_name = name;
    return (unsigned char*)g_shared[0].beg;
}

#define EMU_CHECK_SIZE(N)                                                                                   \
    __EMU_HIDDEN void __asan_load##N##_noabort(void* p) { check((uintptr_t)p, N, false, __builtin_return_address(0)); } \
    __EMU_HIDDEN void __asan_store##N##_noabort(void* p) { check((uintptr_t)p, N, true, __builtin_return_address(0)); }
EMU_CHECK_SIZE(1)
EMU_CHECK_SIZE(2)
EMU_CHECK_SIZE(4)
EMU_CHECK_SIZE(8)
EMU_CHECK_SIZE(16)
__EMU_HIDDEN void __asan_loadN_noabort(void* p, size_t n) { check((uintptr_t)p, n, false, __builtin_return_address(0)); }
__EMU_HIDDEN void __asan_storeN_noabort(void* p, size_t n) { check((uintptr_t)p, n, true, __builtin_return_address(0)); }
__EMU_HIDDEN void __asan_handle_no_return(void) {}
// ThreadSanitizer's calls (the racecheck build): the same checks.
#define EMU_TSAN_SIZE(N)                                                                                    \
    __EMU_HIDDEN void __tsan_read##N(void* p) { check((uintptr_t)p, N, false, __builtin_return_address(0)); } \
    __EMU_HIDDEN void __tsan_write##N(void* p) { check((uintptr_t)p, N, true, __builtin_return_address(0)); }
#define EMU_TSAN_UNALIGNED(N)                                                                               \
    __EMU_HIDDEN void __tsan_unaligned_read##N(void* p) { check((uintptr_t)p, N, false, __builtin_return_address(0)); } \
    __EMU_HIDDEN void __tsan_unaligned_write##N(void* p) { check((uintptr_t)p, N, true, __builtin_return_address(0)); }
EMU_TSAN_SIZE(1)
EMU_TSAN_SIZE(2)
EMU_TSAN_SIZE(4)
EMU_TSAN_SIZE(8)
EMU_TSAN_SIZE(16)
EMU_TSAN_UNALIGNED(2)
EMU_TSAN_UNALIGNED(4)
EMU_TSAN_UNALIGNED(8)
EMU_TSAN_UNALIGNED(16)
__EMU_HIDDEN void __tsan_read_range(void* p, size_t n) { check((uintptr_t)p, n, false, __builtin_return_address(0)); }
__EMU_HIDDEN void __tsan_write_range(void* p, size_t n) { check((uintptr_t)p, n, true, __builtin_return_address(0)); }
// __atomic loads and stores in a kernel (one OS thread runs a launch: plain ones do).
#define EMU_TSAN_ATOMIC(BITS, T)                                                                          \
    __EMU_HIDDEN T __tsan_atomic##BITS##_load(const volatile T* p, int) { return *p; }                     \
    __EMU_HIDDEN void __tsan_atomic##BITS##_store(volatile T* p, T v, int) { *p = v; }
EMU_TSAN_ATOMIC(8, unsigned char)
EMU_TSAN_ATOMIC(16, unsigned short)
EMU_TSAN_ATOMIC(32, unsigned int)
EMU_TSAN_ATOMIC(64, unsigned long long)
__EMU_HIDDEN void __tsan_init(void) {}
__EMU_HIDDEN void __tsan_atomic_signal_fence(int) {}
__EMU_HIDDEN void __tsan_atomic_thread_fence(int) {}
__EMU_HIDDEN void __asan_register_globals(void*, size_t) {}
__EMU_HIDDEN void __asan_unregister_globals(void*, size_t) {}

}  // extern "C"
