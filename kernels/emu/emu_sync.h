// Block barriers, warp collectives and other runtime calls for the CPU emulator.
// The inline wrappers compute what is per-lane (source lane of a shuffle, value
// bits); the runtime (runtime.cpp) does the rendezvous: every calling thread of a
// collective waits, as a fiber, until all the lanes it names have arrived.
#pragma once

enum __emu_warp_op {
    __EMU_SYNCWARP = 1, __EMU_SHFL_IDX, __EMU_SHFL_UP, __EMU_SHFL_DOWN, __EMU_SHFL_XOR,
    __EMU_BALLOT, __EMU_ANY, __EMU_ALL, __EMU_MATCH_ANY, __EMU_MATCH_ALL,
    __EMU_REDUCE_ADD, __EMU_REDUCE_MIN, __EMU_REDUCE_MAX, __EMU_REDUCE_UMIN,
    __EMU_REDUCE_UMAX, __EMU_REDUCE_AND, __EMU_REDUCE_OR, __EMU_REDUCE_XOR,
    __EMU_WARP_OP_END
};
enum __emu_barrier_kind { __EMU_BAR_PLAIN, __EMU_BAR_COUNT, __EMU_BAR_AND, __EMU_BAR_OR };

extern "C" {
// file, line: where the barrier is in the user's source (synccheck compares them).
__EMU_HIDDEN int __emu_barrier(int kind, int pred, const char* file, int line);
// src: the lane whose value this lane receives (shuffles), or -1 for its own value.
__EMU_HIDDEN unsigned long long __emu_warp(int op, unsigned int mask, unsigned long long value, int src);
__EMU_HIDDEN unsigned int __emu_activemask(int site);
[[noreturn]] __EMU_HIDDEN void __emu_fail_bad_width(int width);
[[noreturn]] __EMU_HIDDEN void __trap(void);
[[noreturn]] __EMU_HIDDEN void __brkpt(void);
int printf(const char* fmt, ...);
long clock(void) noexcept;
}

#define __EMU_SITE const char* file = __builtin_FILE(), int line = __builtin_LINE()
static inline void __syncthreads(__EMU_SITE) { __emu_barrier(__EMU_BAR_PLAIN, 0, file, line); }
static inline int __syncthreads_count(int p, __EMU_SITE) { return __emu_barrier(__EMU_BAR_COUNT, p, file, line); }
static inline int __syncthreads_and(int p, __EMU_SITE) { return __emu_barrier(__EMU_BAR_AND, p, file, line); }
static inline int __syncthreads_or(int p, __EMU_SITE) { return __emu_barrier(__EMU_BAR_OR, p, file, line); }
static inline void __syncwarp(unsigned int mask = 0xffffffffu) { __emu_warp(__EMU_SYNCWARP, mask, 0, -1); }
// Lanes that reach the same __activemask() call together (one id per call site).
#define __activemask() __emu_activemask(__COUNTER__)

// ---- shuffles: source lanes follow PTX shfl.sync (segments of `width` lanes) -------
template <class T>
static inline T __emu_shfl(int op, unsigned int mask, T var, int src) {
    static_assert(sizeof(T) <= 8 && __is_trivially_copyable(T), "__shfl_*_sync takes a scalar of at most 8 bytes");
    unsigned long long bits = 0;
    __builtin_memcpy(&bits, &var, sizeof(T));
    bits = __emu_warp(op, mask, bits, src);
    T r;
    __builtin_memcpy(&r, &bits, sizeof(T));
    return r;
}
static inline unsigned int __emu_width(int width) {
    if (width < 1 || width > 32 || (width & (width - 1))) __emu_fail_bad_width(width);
    return (unsigned int)width;
}
template <class T>
static inline T __shfl_sync(unsigned int mask, T var, int srcLane, int width = warpSize) {
    unsigned int w = __emu_width(width), lane = (unsigned int)__emu_tid & 31u, seg = lane & ~(w - 1);
    return __emu_shfl(__EMU_SHFL_IDX, mask, var, (int)(seg + ((unsigned int)srcLane & (w - 1))));
}
template <class T>
static inline T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize) {
    unsigned int w = __emu_width(width), lane = (unsigned int)__emu_tid & 31u, seg = lane & ~(w - 1);
    return __emu_shfl(__EMU_SHFL_UP, mask, var, lane - seg >= delta ? (int)(lane - delta) : -1);
}
template <class T>
static inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize) {
    unsigned int w = __emu_width(width), lane = (unsigned int)__emu_tid & 31u, seg = lane & ~(w - 1);
    return __emu_shfl(__EMU_SHFL_DOWN, mask, var, (unsigned long long)(lane - seg) + delta < w ? (int)(lane + delta) : -1);
}
template <class T>
static inline T __shfl_xor_sync(unsigned int mask, T var, int laneMask, int width = warpSize) {
    unsigned int w = __emu_width(width), lane = (unsigned int)__emu_tid & 31u, seg = lane & ~(w - 1);
    unsigned int src = lane ^ (unsigned int)laneMask;  // earlier segments allowed, later ones not
    return __emu_shfl(__EMU_SHFL_XOR, mask, var, src <= seg + w - 1 ? (int)src : -1);
}

// ---- votes, matches and sm_80 reductions ------------------------------------------
static inline unsigned int __ballot_sync(unsigned int mask, int pred) {
    return (unsigned int)__emu_warp(__EMU_BALLOT, mask, pred != 0, -1);
}
static inline int __any_sync(unsigned int mask, int pred) { return (int)__emu_warp(__EMU_ANY, mask, pred != 0, -1); }
static inline int __all_sync(unsigned int mask, int pred) { return (int)__emu_warp(__EMU_ALL, mask, pred != 0, -1); }
template <class T>
static inline unsigned long long __emu_bits(T v) {
    static_assert(sizeof(T) <= 8 && __is_trivially_copyable(T), "value of at most 8 bytes expected");
    unsigned long long b = 0;
    __builtin_memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
static inline unsigned int __match_any_sync(unsigned int mask, T value) {
    return (unsigned int)__emu_warp(__EMU_MATCH_ANY, mask, __emu_bits(value), -1);
}
template <class T>
static inline unsigned int __match_all_sync(unsigned int mask, T value, int* pred) {
    unsigned int r = (unsigned int)__emu_warp(__EMU_MATCH_ALL, mask, __emu_bits(value), -1);
    *pred = r != 0;
    return r;
}
static inline unsigned int __reduce_add_sync(unsigned int mask, unsigned int v) { return (unsigned int)__emu_warp(__EMU_REDUCE_ADD, mask, v, -1); }
static inline int __reduce_add_sync(unsigned int mask, int v) { return (int)__emu_warp(__EMU_REDUCE_ADD, mask, (unsigned int)v, -1); }
static inline unsigned int __reduce_min_sync(unsigned int mask, unsigned int v) { return (unsigned int)__emu_warp(__EMU_REDUCE_UMIN, mask, v, -1); }
static inline int __reduce_min_sync(unsigned int mask, int v) { return (int)__emu_warp(__EMU_REDUCE_MIN, mask, (unsigned int)v, -1); }
static inline unsigned int __reduce_max_sync(unsigned int mask, unsigned int v) { return (unsigned int)__emu_warp(__EMU_REDUCE_UMAX, mask, v, -1); }
static inline int __reduce_max_sync(unsigned int mask, int v) { return (int)__emu_warp(__EMU_REDUCE_MAX, mask, (unsigned int)v, -1); }
static inline unsigned int __reduce_and_sync(unsigned int mask, unsigned int v) { return (unsigned int)__emu_warp(__EMU_REDUCE_AND, mask, v, -1); }
static inline unsigned int __reduce_or_sync(unsigned int mask, unsigned int v) { return (unsigned int)__emu_warp(__EMU_REDUCE_OR, mask, v, -1); }
static inline unsigned int __reduce_xor_sync(unsigned int mask, unsigned int v) { return (unsigned int)__emu_warp(__EMU_REDUCE_XOR, mask, v, -1); }

// ---- timers ------------------------------------------------------------------------
static inline long long clock64() {
#if defined(__x86_64__)
    return (long long)__builtin_ia32_rdtsc();
#else
    return (long long)clock() * 1000;
#endif
}
