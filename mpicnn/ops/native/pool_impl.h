/* Max pooling over tiled windows (window == stride, no padding, sizes divisible) on
 * NHWC arrays for one element type (T, SFX as in conv_impl.h), the semantics of
 * ops/pool.py: the maximum propagates NaN like np.maximum, and the backward gives dy to
 * the first element of the window (row-major) equal to y.
 *
 * NumPy runs these as several strided passes with masks in memory; here each output
 * row's windows are read once, with the loops over channels contiguous (vectorised).
 */
#define F(name) CAT(name, SFX)

/* y (N*Ho, Wo, C) from x (N*Ho, KH, Wo*KW, C). */
void F(pool_max_fwd)(const T *x, T *y, long rows, int KH, int Wo, int KW, int C)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow;
        T *yr = y + r * Wo * C;
        for (int j = 0; j < Wo; j++) {
            T *yp = yr + (long)j * C;
            const T *x0 = xr + (long)j * KW * C;
            for (int c = 0; c < C; c++)
                yp[c] = x0[c];
            for (int ki = 0; ki < KH; ki++)
                for (int kj = ki == 0; kj < KW; kj++) {
                    const T *xv = x0 + ki * xrow + (long)kj * C;
                    for (int c = 0; c < C; c++) {
                        T m = yp[c], v = xv[c];
                        yp[c] = (v > m || v != v) ? v : m;
                    }
                }
        }
    }
}

/* dx (N*Ho, KH, Wo*KW, C) from dy and y (N*Ho, Wo, C) and x; taken: C bytes of scratch. */
void F(pool_max_bwd)(const T *dy, const T *x, const T *y, T *dx, unsigned char *taken,
                     long rows, int KH, int Wo, int KW, int C)
{
    const long xrow = (long)Wo * KW * C;
    for (long r = 0; r < rows; r++) {
        const T *xr = x + r * KH * xrow, *yr = y + r * Wo * C, *gr = dy + r * Wo * C;
        T *dr = dx + r * KH * xrow;
        for (int j = 0; j < Wo; j++) {
            const T *yp = yr + (long)j * C, *gp = gr + (long)j * C;
            for (int c = 0; c < C; c++)
                taken[c] = 0;
            for (int ki = 0; ki < KH; ki++)
                for (int kj = 0; kj < KW; kj++) {
                    const long at = ki * xrow + ((long)j * KW + kj) * C;
                    const T *xv = xr + at;
                    T *dv = dr + at;
                    for (int c = 0; c < C; c++) {
                        const int hit = (xv[c] == yp[c]) & !taken[c];
                        dv[c] = hit ? gp[c] : (T)0;
                        taken[c] |= hit;
                    }
                }
        }
    }
}

#undef F
