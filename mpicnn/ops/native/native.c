/* mpicnn's native CPU kernels, for float32 and float64, called through ctypes
 * (mpicnn/ops/native.py): direct NHWC convolution (forward, input gradient, weight
 * gradient; conv_impl.h), the passes of batch normalisation (norm_impl.h), max
 * pooling over tiled windows (pool_impl.h), and the gather of cached dataset samples into
 * a float batch (below).
 *
 * Built at install time as an optional extension (setup.py): when it is missing the
 * NumPy code of ops/conv.py runs instead, with the same results. No Python API is used;
 * the functions take raw pointers to C-contiguous arrays that the caller checked.
 *
 * On x86-64 setup.py compiles this file three times, for x86-64-v4 (AVX-512), v3 (AVX2
 * and FMA) and the baseline, and native.py loads the best one whose
 * mpicnn_native_supported() says the CPU runs it: a library built on a login node is
 * right, and fast, on any compute node. (GCC's target_clones would do this in one
 * library, but its clones did not inline the vector helpers: 10x slower.)
 */
#include <stddef.h>

#define ALWAYS_INLINE __attribute__((always_inline))
/* Output pixels per register tile for 1, 2 and 4 vectors of outputs (AVX-512 has 32
 * vector registers: tiles of 12x1, 12x2 and 6x4 leave room for weights). */
/* Bytes of weights a channel block keeps in L1 (32 KB on the CPUs we measured). */
#ifndef L1_WEIGHT_BYTES
#define L1_WEIGHT_BYTES 24576
#endif
#ifndef FWD_JB1
#define FWD_JB1 12
#endif
#ifndef FWD_JB2
#define FWD_JB2 12
#endif
#ifndef FWD_JB4
#define FWD_JB4 6
#endif

/* The ABI version native.py checks: bump it when a signature changes. */
int mpicnn_native_version(void) { return 9; }

/* 1 when this CPU runs the instructions this copy was compiled for (MPICNN_NATIVE_LEVEL,
 * an x86-64 micro-architecture level; unset: the compiler's default, always runnable). */
int mpicnn_native_supported(void)
{
#if defined(MPICNN_NATIVE_LEVEL) && defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports(MPICNN_NATIVE_LEVEL) != 0;
#else
    return 1;
#endif
}

typedef float v16f __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
typedef long long v8l __attribute__((vector_size(64)));

#define T float
#define V v16f
#define IV v16i
#define VL 16
#define SFX _f32
#include "conv_impl.h"
#include "norm_impl.h"
#include "pool_impl.h"
#undef T
#undef V
#undef IV
#undef VL
#undef SFX

#define T double
#define V v8d
#define IV v8l
#define VL 8
#define SFX _f64
#include "conv_impl.h"
#include "norm_impl.h"
#include "pool_impl.h"

/* out[i, :] = src[idx[i], :] converted to the float type, divided by 255 for uint8
 * images, for i < n rows of `row` elements: NumPy's take, astype and divide in one pass,
 * with the same bits (one IEEE conversion and one division per element; this file is
 * never built with -ffast-math). ctypes calls it without the GIL, so a prefetch thread
 * gathers while the step's Python runs. */
#define GATHER(NAME, S, D, CONVERT)                                                      \
    void NAME(const S *src, const long long *idx, D *out, long n, long row)              \
    {                                                                                    \
        for (long i = 0; i < n; i++) {                                                   \
            const S *s = src + (size_t)idx[i] * (size_t)row;                             \
            D *o = out + (size_t)i * (size_t)row;                                        \
            for (long j = 0; j < row; j++)                                               \
                o[j] = CONVERT(s[j]);                                                    \
        }                                                                                \
    }
#define BYTE_F32(x) ((float)(x) / 255.0f)
#define BYTE_F64(x) ((double)(x) / 255.0)
#define AS_F32(x) ((float)(x))
#define AS_F64(x) ((double)(x))
GATHER(gather_u8_f32, unsigned char, float, BYTE_F32)
GATHER(gather_u8_f64, unsigned char, double, BYTE_F64)
GATHER(gather_f32_f32, float, float, AS_F32)
GATHER(gather_f32_f64, float, double, AS_F64)
GATHER(gather_f64_f32, double, float, AS_F32)
GATHER(gather_f64_f64, double, double, AS_F64)
