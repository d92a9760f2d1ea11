/* Max pooling over tiled windows (window == stride, no padding, sizes divisible) on
 * NHWC arrays, for one element type (T, V, IV, VL, SFX as in conv_impl.h), the semantics
 * of ops/pool.py: the maximum propagates NaN like np.maximum, and the backward gives dy
 * to the first element of the window (row-major) equal to y, 0 to the others.
 *
 * NumPy runs these as strided passes with masks in memory; here each window is read
 * once, a vector of channels at a time, with compares and selects in registers. The
 * channels past the last whole vector (all of them below VL: LeNet-5's 6, an RGB
 * input's 3) go one at a time, branch-free (random data mispredicts every other compare).
 * native.py runs the forward here from one whole vector of channels on (below it
 * NumPy's row-wide passes are as fast) and the backward for any count: NumPy's needs 5
 * passes over masks when windows hold ties, the rule after MNIST's blank borders (conv
 * outputs equal to the bias); 6 channels at batch 64 of 28x28: 880 -> 290 us.
 */
#define F(name) CAT(name, SFX)
#define UT __typeof__(((IV){})[0]) /* the integer as wide as T */

/* a where take (0 or 1), else b, by bits: no branch. */
static inline ALWAYS_INLINE T F(pick)(int take, T a, T b)
{
    UT ua, ub;
    __builtin_memcpy(&ua, &a, sizeof a);
    __builtin_memcpy(&ub, &b, sizeof b);
    const UT mask = -(UT)take, bits = (ua & mask) | (ub & ~mask);
    T out;
    __builtin_memcpy(&out, &bits, sizeof out);
    return out;
}

/* y (N*Ho, Wo, C) from x (N*Ho, KH, Wo*KW, C), channels [0, whole) a vector at a time. */
static inline ALWAYS_INLINE void F(max_fwd_vectors)(const T *x, T *y, long rows, int KH, int Wo, int KW, int C,
                                                    int whole)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow;
        for (int j = 0; j < Wo; j++) {
            const T *x0 = xr + (long)j * KW * C;
            T *yp = y + (r * Wo + j) * C;
            for (int c = 0; c < whole; c += VL) {
                V m = F(load)(x0 + c);
                for (int ki = 0; ki < KH; ki++)
                    for (int kj = 0; kj < KW; kj++) {
                        const V v = F(load)(x0 + ki * xrow + (long)kj * C + c);
                        const IV take = (v > m) | (v != v);  /* a NaN wins and stays */
                        m = (V)(((IV)v & take) | ((IV)m & ~take));
                    }
                F(store)(yp + c, m);
            }
        }
    }
}

/* The same for the n (< VL) channels from c0, one at a time: a separate pass, so that
 * with n a constant the compiler keeps the window's maxima in registers. */
static inline ALWAYS_INLINE void F(max_fwd_channels)(const T *x, T *y, long rows, int KH, int Wo, int KW, int C,
                                                     int c0, int n)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow;
        for (int j = 0; j < Wo; j++) {
            const T *x0 = xr + (long)j * KW * C + c0;
            T *yp = y + (r * Wo + j) * C + c0;
            T m[VL];
            for (int c = 0; c < n; c++)
                m[c] = x0[c];
            for (int ki = 0; ki < KH; ki++)
                for (int kj = 0; kj < KW; kj++) {
                    const T *xv = x0 + ki * xrow + (long)kj * C;
                    for (int c = 0; c < n; c++) {
                        const T v = xv[c];
                        m[c] = F(pick)((v > m[c]) | (v != v), v, m[c]);
                    }
                }
            for (int c = 0; c < n; c++)
                yp[c] = m[c];
        }
    }
}

/* dx (N*Ho, KH, Wo*KW, C) from dy and y (N*Ho, Wo, C) and x, channels [0, whole) a vector
 * at a time: every element of dx lies in one window and is written once. */
static inline ALWAYS_INLINE void F(max_bwd_vectors)(const T *dy, const T *x, const T *y, T *dx, long rows, int KH,
                                                    int Wo, int KW, int C, int whole)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow;
        T *dr = dx + r * KH * xrow;
        for (int j = 0; j < Wo; j++) {
            const long q = (r * Wo + j) * C, base = (long)j * KW * C;
            for (int c = 0; c < whole; c += VL) {
                const V m = F(load)(y + q + c);
                const IV g = (IV)F(load)(dy + q + c);
                IV taken = (IV){};
                for (int ki = 0; ki < KH; ki++)
                    for (int kj = 0; kj < KW; kj++) {
                        const long at = base + ki * xrow + (long)kj * C + c;
                        const IV hit = (F(load)(xr + at) == m) & ~taken;
                        F(store)(dr + at, (V)(g & hit));
                        taken |= hit;
                    }
            }
        }
    }
}

/* The same for the n (< VL) channels from c0, one at a time. */
static inline ALWAYS_INLINE void F(max_bwd_channels)(const T *dy, const T *x, const T *y, T *dx, long rows, int KH,
                                                     int Wo, int KW, int C, int c0, int n)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow + c0;
        T *dr = dx + r * KH * xrow + c0;
        for (int j = 0; j < Wo; j++) {
            const long q = (r * Wo + j) * C + c0, base = (long)j * KW * C;
            const T *m = y + q, *g = dy + q;
            int taken[VL];
            for (int c = 0; c < n; c++)
                taken[c] = 0;
            for (int ki = 0; ki < KH; ki++)
                for (int kj = 0; kj < KW; kj++) {
                    const long at = base + ki * xrow + (long)kj * C;
                    for (int c = 0; c < n; c++) {
                        const int hit = (xr[at + c] == m[c]) & !taken[c];
                        dr[at + c] = F(pick)(hit, g[c], (T)0);
                        taken[c] |= hit;
                    }
                }
        }
    }
}

/* The backward's usual small channel counts get their own copy of the loops (the count
 * a constant: 6 channels 480 -> 290 us); other counts run whole vectors and a tail of
 * any length. */
#define SMALL_CHANNELS(CALL) \
    switch (C) {            \
    case 1: CALL(1); return; \
    case 2: CALL(2); return; \
    case 3: CALL(3); return; \
    case 4: CALL(4); return; \
    case 6: CALL(6); return; \
    }

void F(pool_max_fwd)(const T *x, T *y, long rows, int KH, int Wo, int KW, int C)
{
    F(max_fwd_vectors)(x, y, rows, KH, Wo, KW, C, C - C % VL);
    if (C % VL)
        F(max_fwd_channels)(x, y, rows, KH, Wo, KW, C, C - C % VL, C % VL);
}

void F(pool_max_bwd)(const T *dy, const T *x, const T *y, T *dx, long rows, int KH, int Wo, int KW, int C)
{
#define BWD(n) F(max_bwd_channels)(dy, x, y, dx, rows, KH, Wo, KW, n, 0, n)
    SMALL_CHANNELS(BWD)
#undef BWD
    F(max_bwd_vectors)(dy, x, y, dx, rows, KH, Wo, KW, C, C - C % VL);
    if (C % VL)
        F(max_bwd_channels)(dy, x, y, dx, rows, KH, Wo, KW, C, C - C % VL, C % VL);
}

#undef SMALL_CHANNELS
#undef UT
#undef F
