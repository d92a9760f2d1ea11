/* Max pooling over tiled windows (window == stride, no padding, sizes divisible) on
 * NHWC arrays with whole vectors of channels (C % VL == 0), for one element type (T, V,
 * IV, VL, SFX as in conv_impl.h), the semantics of ops/pool.py: the maximum propagates
 * NaN like np.maximum, and the backward gives dy to the first element of the window
 * (row-major) equal to y, 0 to the others.
 *
 * NumPy runs these as strided passes with masks in memory; here each window is read
 * once, a vector of channels at a time, with compares and selects in registers.
 */
#define F(name) CAT(name, SFX)

/* y (N*Ho, Wo, C) from x (N*Ho, KH, Wo*KW, C). */
void F(pool_max_fwd)(const T *x, T *y, long rows, int KH, int Wo, int KW, int C)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow;
        for (int j = 0; j < Wo; j++) {
            const T *x0 = xr + (long)j * KW * C;
            T *yp = y + (r * Wo + j) * C;
            for (int c = 0; c < C; c += VL) {
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

/* dx (N*Ho, KH, Wo*KW, C) from dy and y (N*Ho, Wo, C) and x: every element of dx lies
 * in one window and is written once. */
void F(pool_max_bwd)(const T *dy, const T *x, const T *y, T *dx, long rows, int KH, int Wo, int KW, int C)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow;
        T *dr = dx + r * KH * xrow;
        for (int j = 0; j < Wo; j++) {
            const long q = (r * Wo + j) * C, base = (long)j * KW * C;
            for (int c = 0; c < C; c += VL) {
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

#undef F
