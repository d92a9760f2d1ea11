// CUDA qualifiers, vector types, dim3 and the built-in index variables for the CPU
// emulator. Shared by the force-included header (user kernels) and runtime.cpp.
#pragma once

// ---- qualifiers --------------------------------------------------------------------
// __shared__ becomes `static`: all threads of a block run as fibers on one OS thread
// and blocks run one after another, so one static instance is exactly block-shared
// storage. `extern __shared__` (dynamic shared memory) is rewritten before compiling
// (kernels/emu/source.py), because `extern static` is not C++.
#ifndef __global__  // cuda_emu.h marks kernels in its parse-only pass
#define __global__
#endif
#define __device__
#define __host__
#define __shared__ static
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __inline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __cudart_builtin__
#define __device_builtin__

#define __EMU_HIDDEN __attribute__((visibility("hidden")))

// ---- vector types (sizes and alignments as in CUDA's vector_types.h) --------------
#define __EMU_VEC1(T, N, A) struct __align__(A) N##1 { T x; };
#define __EMU_VEC2(T, N, A) struct __align__(A) N##2 { T x, y; };
#define __EMU_VEC3(T, N) struct N##3 { T x, y, z; };
#define __EMU_VEC4(T, N, A) struct __align__(A) N##4 { T x, y, z, w; };
#define __EMU_VECS(T, N, A1, A2, A4)                                                 \
    __EMU_VEC1(T, N, A1) __EMU_VEC2(T, N, A2) __EMU_VEC3(T, N) __EMU_VEC4(T, N, A4)  \
    static inline N##1 make_##N##1(T x) { return N##1{x}; }                        \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }                \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }        \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }

__EMU_VECS(signed char, char, 1, 2, 4)
__EMU_VECS(unsigned char, uchar, 1, 2, 4)
__EMU_VECS(short, short, 2, 4, 8)
__EMU_VECS(unsigned short, ushort, 2, 4, 8)
__EMU_VECS(int, int, 4, 8, 16)
__EMU_VECS(unsigned int, uint, 4, 8, 16)
__EMU_VECS(long, long, 8, 16, 16)
__EMU_VECS(unsigned long, ulong, 8, 16, 16)
__EMU_VECS(long long, longlong, 8, 16, 16)
__EMU_VECS(unsigned long long, ulonglong, 8, 16, 16)
__EMU_VECS(float, float, 4, 8, 16)
__EMU_VECS(double, double, 8, 16, 16)

// The scalar a vector type is made of, so a `float4*` parameter accepts float32 arrays.
template <class T> struct __emu_vec_elem { typedef T type; };
#define __EMU_ELEM(T, N)                                              \
    template <> struct __emu_vec_elem<N##1> { typedef T type; };       \
    template <> struct __emu_vec_elem<N##2> { typedef T type; };       \
    template <> struct __emu_vec_elem<N##3> { typedef T type; };       \
    template <> struct __emu_vec_elem<N##4> { typedef T type; };
__EMU_ELEM(signed char, char) __EMU_ELEM(unsigned char, uchar) __EMU_ELEM(short, short)
__EMU_ELEM(unsigned short, ushort) __EMU_ELEM(int, int) __EMU_ELEM(unsigned int, uint)
__EMU_ELEM(long, long) __EMU_ELEM(unsigned long, ulong) __EMU_ELEM(long long, longlong)
__EMU_ELEM(unsigned long long, ulonglong) __EMU_ELEM(float, float) __EMU_ELEM(double, double)

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---- built-in variables ------------------------------------------------------------
// The runtime rewrites these before it switches to a thread; user code sees them
// through const references so that, as in CUDA, it cannot assign to them.
extern __EMU_HIDDEN uint3 __emu_threadIdx;
extern __EMU_HIDDEN uint3 __emu_blockIdx;
extern __EMU_HIDDEN dim3 __emu_blockDim;
extern __EMU_HIDDEN dim3 __emu_gridDim;
extern __EMU_HIDDEN int __emu_tid;  // linear thread index in the block
// `extern __shared__ T name[];` is rewritten to a pointer to this buffer (source.py).
extern __EMU_HIDDEN unsigned char __emu_dynamic_smem[];
static const uint3& threadIdx = __emu_threadIdx;
static const uint3& blockIdx = __emu_blockIdx;
static const dim3& blockDim = __emu_blockDim;
static const dim3& gridDim = __emu_gridDim;
static constexpr int warpSize = 32;
