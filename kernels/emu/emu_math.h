// CUDA device math for the CPU emulator: the C math library (exact, no fast-math),
// plus CUDA's own names: min/max overloads, rsqrtf, __expf-style intrinsics,
// saturating conversions, bit reinterpretation and integer intrinsics.
#pragma once
#include <math.h>    // C++ <math.h>: float overloads of exp, sqrt, ... in the global namespace
#include <stddef.h>  // size_t, ptrdiff_t (NVRTC provides them too)

// NVRTC defines none of these without includes; hide them so code that relies on
// them fails here as it would under NVRTC (math_constants.h has CUDART_INF_F etc.).
#undef INFINITY
#undef NAN
#undef HUGE_VALF
#undef HUGE_VALL
#undef M_PI
#undef M_PI_2
#undef M_PI_4
#undef M_E
#undef M_SQRT2
#undef M_SQRT1_2
#undef M_LN2
#undef M_LN10
#undef M_LOG2E

// ---- min / max: the same overload set as CUDA's math_functions.hpp ----------------
#define __EMU_MINMAX(A, B, R)                                                   \
    static inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }          \
    static inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
__EMU_MINMAX(int, int, int)
__EMU_MINMAX(unsigned int, unsigned int, unsigned int)
__EMU_MINMAX(int, unsigned int, unsigned int)
__EMU_MINMAX(unsigned int, int, unsigned int)
__EMU_MINMAX(long, long, long)
__EMU_MINMAX(unsigned long, unsigned long, unsigned long)
__EMU_MINMAX(long, unsigned long, unsigned long)
__EMU_MINMAX(unsigned long, long, unsigned long)
__EMU_MINMAX(long long, long long, long long)
__EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
__EMU_MINMAX(long long, unsigned long long, unsigned long long)
__EMU_MINMAX(unsigned long long, long long, unsigned long long)
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline double min(float a, double b) { return fmin(a, b); }
static inline double max(float a, double b) { return fmax(a, b); }
static inline double min(double a, float b) { return fmin(a, b); }
static inline double max(double a, float b) { return fmax(a, b); }
static inline unsigned int umin(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int umax(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long llmin(long long a, long long b) { return a < b ? a : b; }
static inline long long llmax(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// ---- functions CUDA has and libm lacks ---------------------------------------------
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline double rcbrt(double x) { return 1.0 / cbrt(x); }
static inline double sinpi(double x) { return sin(3.141592653589793238 * x); }
static inline double cospi(double x) { return cos(3.141592653589793238 * x); }
static inline float sinpif(float x) { return (float)sinpi(x); }
static inline float cospif(float x) { return (float)cospi(x); }
static inline void sincospif(float x, float* s, float* c) { *s = sinpif(x); *c = cospif(x); }
static inline void sincospi(double x, double* s, double* c) { *s = sinpi(x); *c = cospi(x); }
static inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
static inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752440); }
static inline float fdividef(float a, float b) { return a / b; }
static inline float norm3df(float a, float b, float c) { return sqrtf(a * a + b * b + c * c); }
static inline float rnorm3df(float a, float b, float c) { return 1.0f / norm3df(a, b, c); }

// ---- fast-math intrinsics: exact here, approximate on a GPU ------------------------
// Not static: glibc already declares some of these names (extern "C").
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
// Round-to-nearest arithmetic is what the CPU does by default.
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __frsqrt_rn(float a) { return 1.0f / sqrtf(a); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline double __drcp_rn(double a) { return 1.0 / a; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }

// ---- conversions: saturate and map NaN to 0 like the GPU's cvt instructions --------
template <class I> struct __emu_ilim;
#define __EMU_ILIM(I, LO, HI)                                      \
    template <> struct __emu_ilim<I> {                              \
        static constexpr I lo = LO, hi = HI;                        \
    };
__EMU_ILIM(int, -2147483647 - 1, 2147483647)
__EMU_ILIM(unsigned int, 0u, 4294967295u)
__EMU_ILIM(long long, -9223372036854775807LL - 1, 9223372036854775807LL)
__EMU_ILIM(unsigned long long, 0ull, 18446744073709551615ull)
template <class I, class F>
static inline I __emu_cvt(F x) {  // x is already rounded to an integral value
    if (x != x) return 0;
    if ((double)x <= (double)__emu_ilim<I>::lo) return __emu_ilim<I>::lo;
    if ((double)x >= (double)__emu_ilim<I>::hi) return __emu_ilim<I>::hi;
    return (I)x;
}
#define __EMU_CVT(name, I, F)                                                       \
    static inline I name##_rn(F x) { return __emu_cvt<I, F>(rint(x)); }              \
    static inline I name##_rz(F x) { return __emu_cvt<I, F>(trunc(x)); }             \
    static inline I name##_ru(F x) { return __emu_cvt<I, F>(ceil(x)); }              \
    static inline I name##_rd(F x) { return __emu_cvt<I, F>(floor(x)); }
__EMU_CVT(__float2int, int, float)
__EMU_CVT(__float2uint, unsigned int, float)
__EMU_CVT(__float2ll, long long, float)
__EMU_CVT(__float2ull, unsigned long long, float)
__EMU_CVT(__double2int, int, double)
__EMU_CVT(__double2uint, unsigned int, double)
__EMU_CVT(__double2ll, long long, double)
__EMU_CVT(__double2ull, unsigned long long, double)
static inline float __double2float_rn(double x) { return (float)x; }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned int x) { return (float)x; }
static inline float __ll2float_rn(long long x) { return (float)x; }
static inline float __ull2float_rn(unsigned long long x) { return (float)x; }
static inline double __int2double_rn(int x) { return (double)x; }
static inline double __uint2double_rn(unsigned int x) { return (double)x; }
static inline double __ll2double_rn(long long x) { return (double)x; }
static inline double __ull2double_rn(unsigned long long x) { return (double)x; }

// ---- bit reinterpretation ----------------------------------------------------------
template <class To, class From>
static inline To __emu_bitcast(From v) {
    static_assert(sizeof(To) == sizeof(From), "size mismatch");
    To r;
    __builtin_memcpy(&r, &v, sizeof(To));
    return r;
}
static inline int __float_as_int(float x) { return __emu_bitcast<int>(x); }
static inline unsigned int __float_as_uint(float x) { return __emu_bitcast<unsigned int>(x); }
static inline float __int_as_float(int x) { return __emu_bitcast<float>(x); }
static inline float __uint_as_float(unsigned int x) { return __emu_bitcast<float>(x); }
static inline long long __double_as_longlong(double x) { return __emu_bitcast<long long>(x); }
static inline double __longlong_as_double(long long x) { return __emu_bitcast<double>(x); }
static inline int __double2hiint(double x) { return (int)(__double_as_longlong(x) >> 32); }
static inline int __double2loint(double x) { return (int)__double_as_longlong(x); }
static inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double((long long)(((unsigned long long)(unsigned int)hi << 32) | (unsigned int)lo));
}

// ---- integer intrinsics ------------------------------------------------------------
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned int)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned long long __brevll(unsigned long long x) {
    return ((unsigned long long)__brev((unsigned int)x) << 32) | __brev((unsigned int)(x >> 32));
}
static inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned int r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned int)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
static inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int s) {
    return (unsigned int)(((((unsigned long long)hi << 32) | lo) << (s & 31)) >> 32);
}
static inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int s) {
    return (unsigned int)((((unsigned long long)hi << 32) | lo) >> (s & 31));
}
static inline unsigned int __funnelshift_lc(unsigned int lo, unsigned int hi, unsigned int s) {
    return s >= 32 ? lo : __funnelshift_l(lo, hi, s);
}
static inline unsigned int __funnelshift_rc(unsigned int lo, unsigned int hi, unsigned int s) {
    return s >= 32 ? hi : __funnelshift_r(lo, hi, s);
}
static inline int __mul24(int a, int b) { return ((a << 8) >> 8) * ((b << 8) >> 8); }
static inline unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xffffffu) * (b & 0xffffffu); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned int)(((unsigned long long)a * b) >> 32); }
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline unsigned int __sad(int a, int b, unsigned int c) { return c + (unsigned int)(a > b ? a - b : b - a); }
static inline unsigned int __usad(unsigned int a, unsigned int b, unsigned int c) { return c + (a > b ? a - b : b - a); }
static inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
static inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
static inline unsigned int __uhadd(unsigned int a, unsigned int b) { return (unsigned int)(((unsigned long long)a + b) >> 1); }
static inline unsigned int __urhadd(unsigned int a, unsigned int b) { return (unsigned int)(((unsigned long long)a + b + 1) >> 1); }

// ---- cache-hinted loads and stores: plain memory accesses here ---------------------
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldca(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline T __ldlu(const T* p) { return *p; }
template <class T> static inline T __ldcv(const T* p) { return *p; }
template <class T> static inline void __stwb(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stwt(T* p, T v) { *p = v; }
