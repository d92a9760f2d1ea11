// CUDA atomics for the CPU emulator. Threads of a launch run one at a time on one
// OS thread and only switch at barriers and warp collectives, so a plain
// read-modify-write is atomic. Overloads follow CUDA's list of supported types;
// the _block and _system scopes behave the same here.
#pragma once

#define __EMU_ATOMIC_SCOPES(R, name, params, body) \
    static inline R name params body               \
    static inline R name##_block params body       \
    static inline R name##_system params body

#define __EMU_ATOMIC_RMW(name, T, expr) \
    __EMU_ATOMIC_SCOPES(T, name, (T* p, T v), { T old = *p; *p = (expr); return old; })

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

#define __EMU_ATOMIC_CAS(T) \
    __EMU_ATOMIC_SCOPES(T, atomicCAS, (T* p, T cmp, T v), { T old = *p; *p = old == cmp ? v : old; return old; })

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
static inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
