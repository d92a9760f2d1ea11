// CUDA atomics for the CPU emulator. Threads of a launch run one at a time on one
// OS thread and only switch at barriers, warp collectives and spin points, so a
// read-modify-write through volatile is atomic here; volatile also keeps the compiler
// from merging or hoisting it, so a loop that polls a flag polls memory, as on a GPU.
// Each atomic is a spin point: a thread whose recent atomics changed nothing (a
// spin-wait) lets the other threads of its block run, and a spin that no thread can
// end is reported as a deadlock (runtime.cpp). Overloads follow CUDA's list of
// supported types; the _block and _system scopes behave the same here.
#pragma once

extern "C" {
extern __EMU_HIDDEN int __emu_spin_budget;       // atomics until the next spin check
extern __EMU_HIDDEN int __emu_spin_effect;       // whether one of them changed memory
extern __EMU_HIDDEN const void* __emu_spin_addr; // the last atomic's address (for messages)
__EMU_HIDDEN void __emu_spin_check(void);
}

// In checked builds (every access calls check.cpp) racecheck leaves an atomic's own
// accesses alone and takes a fence as ordering what came before it (a flag set after
// __threadfence_block hands data over, as on a GPU).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
extern "C" {
extern __EMU_HIDDEN int __emu_race_in_atomic;
extern __EMU_HIDDEN unsigned long long __emu_race_epoch;
}
#define __EMU_ATOMIC_BEGIN __emu_race_in_atomic = 1;
#define __EMU_ATOMIC_END __emu_race_in_atomic = 0;
#define __EMU_FENCE __emu_race_epoch++;
#else
#define __EMU_ATOMIC_BEGIN
#define __EMU_ATOMIC_END
#define __EMU_FENCE
#endif

template <class T>
static inline void __emu_atomic_done(const void* p, T old, T now) {
    __emu_spin_effect |= __builtin_memcmp(&old, &now, sizeof(T)) != 0;
    __emu_spin_addr = p;
    if (__builtin_expect(--__emu_spin_budget <= 0, 0)) __emu_spin_check();
}

#define __EMU_ATOMIC_SCOPES(R, name, params, ...)  \
    static inline R name params __VA_ARGS__         \
    static inline R name##_block params __VA_ARGS__ \
    static inline R name##_system params __VA_ARGS__

#define __EMU_ATOMIC_RMW(name, T, expr)                                              \
    __EMU_ATOMIC_SCOPES(T, name, (T* p, T v), {                                      \
        volatile T* q = p;                                                           \
        __EMU_ATOMIC_BEGIN                                                           \
        T old = *q, now = (expr);                                                    \
        *q = now;                                                                    \
        __EMU_ATOMIC_END                                                             \
        __emu_atomic_done(p, old, now);                                              \
        return old;                                                                  \
    })

#define __EMU_ATOMIC_ARITH(T)               \
    __EMU_ATOMIC_RMW(atomicAdd, T, old + v)  \
    __EMU_ATOMIC_RMW(atomicExch, T, v)

#define __EMU_ATOMIC_INT(T)                          \
    __EMU_ATOMIC_RMW(atomicMin, T, v < old ? v : old) \
    __EMU_ATOMIC_RMW(atomicMax, T, v > old ? v : old)

#define __EMU_ATOMIC_BITS(T)                \
    __EMU_ATOMIC_RMW(atomicAnd, T, old & v)  \
    __EMU_ATOMIC_RMW(atomicOr, T, old | v)   \
    __EMU_ATOMIC_RMW(atomicXor, T, old ^ v)

#define __EMU_ATOMIC_CAS(T)                                                          \
    __EMU_ATOMIC_SCOPES(T, atomicCAS, (T* p, T cmp, T v), {                          \
        volatile T* q = p;                                                           \
        __EMU_ATOMIC_BEGIN                                                           \
        T old = *q, now = old == cmp ? v : old;                                      \
        *q = now;                                                                    \
        __EMU_ATOMIC_END                                                             \
        __emu_atomic_done(p, old, now);                                              \
        return old;                                                                  \
    })

__EMU_ATOMIC_ARITH(int)
__EMU_ATOMIC_ARITH(unsigned int)
__EMU_ATOMIC_ARITH(unsigned long long)
__EMU_ATOMIC_ARITH(float)
__EMU_ATOMIC_RMW(atomicAdd, double, old + v)
__EMU_ATOMIC_RMW(atomicSub, int, old - v)
__EMU_ATOMIC_RMW(atomicSub, unsigned int, old - v)
__EMU_ATOMIC_INT(int)
__EMU_ATOMIC_INT(unsigned int)
__EMU_ATOMIC_INT(long long)
__EMU_ATOMIC_INT(unsigned long long)
__EMU_ATOMIC_BITS(int)
__EMU_ATOMIC_BITS(unsigned int)
__EMU_ATOMIC_BITS(unsigned long long)
__EMU_ATOMIC_CAS(int)
__EMU_ATOMIC_CAS(unsigned int)
__EMU_ATOMIC_CAS(unsigned long long)
__EMU_ATOMIC_CAS(unsigned short)
__EMU_ATOMIC_RMW(atomicInc, unsigned int, old >= v ? 0u : old + 1u)
__EMU_ATOMIC_RMW(atomicDec, unsigned int, (old == 0u || old > v) ? v : old - 1u)

// Memory fences order nothing on one OS thread; keep them as compiler barriers.
static inline void __threadfence() { __EMU_FENCE __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __EMU_FENCE __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __EMU_FENCE __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// A back-off in a spin-wait: a spin point that changes nothing.
static inline void __nanosleep(unsigned int) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (--__emu_spin_budget <= 0) __emu_spin_check();
}
