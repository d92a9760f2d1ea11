/* Batch normalisation passes over channels-last (M, C) arrays for one element type
 * (T, SFX as in conv_impl.h), the formulas of ops/norm.py: per-channel sums accumulated
 * in double (products formed in double), the two-pass variance, and the same order of
 * operations for xhat, y and dx.
 *
 * NumPy needs a pass per operation and its reductions over the M axis of a (M, C)
 * array with C = 16 run in runs of 16 values; here each pass streams the rows once with
 * the C accumulators (a few vectors of doubles) held in a small array.
 */
#define F(name) CAT(name, SFX)

/* sums[c] = sum_m x[m, c];  with y: sums[c] = sum_m x[m, c] * y[m, c]. */
void F(bn_sums)(const T *x, const T *y, double *sums, long M, int C)
{
    double acc[C];
    for (int c = 0; c < C; c++)
        acc[c] = 0.0;
    if (y == NULL) {
        for (long m = 0; m < M; m++) {
            const T *xr = x + m * C;
            for (int c = 0; c < C; c++)
                acc[c] += (double)xr[c];
        }
    } else {
        for (long m = 0; m < M; m++) {
            const T *xr = x + m * C, *yr = y + m * C;
            for (int c = 0; c < C; c++)
                acc[c] += (double)xr[c] * (double)yr[c];
        }
    }
    for (int c = 0; c < C; c++)
        sums[c] = acc[c];
}

/* centred[m, c] = x[m, c] - mean[c] (in T) and sq[c] = sum_m centred^2 (in double). */
void F(bn_center)(const T *x, const T *mean, T *centred, double *sq, long M, int C)
{
    double acc[C];
    for (int c = 0; c < C; c++)
        acc[c] = 0.0;
    for (long m = 0; m < M; m++) {
        const T *xr = x + m * C;
        T *cr = centred + m * C;
        for (int c = 0; c < C; c++) {
            T v = xr[c] - mean[c];
            cr[c] = v;
            acc[c] += (double)v * (double)v;
        }
    }
    for (int c = 0; c < C; c++)
        sq[c] = acc[c];
}

/* xhat *= invstd (in place), y = xhat * weight + bias. */
void F(bn_scale)(T *xhat, const T *invstd, const T *weight, const T *bias, T *y, long M, int C)
{
    for (long m = 0; m < M; m++) {
        T *xr = xhat + m * C, *yr = y + m * C;
        for (int c = 0; c < C; c++) {
            T v = xr[c] * invstd[c];
            xr[c] = v;
            yr[c] = v * weight[c] + bias[c];
        }
    }
}

/* sums[c] = sum_m dy, sums[C + c] = sum_m dy * xhat, both in double. */
void F(bn_grad_sums)(const T *dy, const T *xhat, double *sums, long M, int C)
{
    double a[C], b[C];
    for (int c = 0; c < C; c++)
        a[c] = b[c] = 0.0;
    for (long m = 0; m < M; m++) {
        const T *dr = dy + m * C, *xr = xhat + m * C;
        for (int c = 0; c < C; c++) {
            a[c] += (double)dr[c];
            b[c] += (double)dr[c] * (double)xr[c];
        }
    }
    for (int c = 0; c < C; c++) {
        sums[c] = a[c];
        sums[C + c] = b[c];
    }
}

/* dx = ((dy - xhat * p) - q) * g, in ops/norm.py's order. */
void F(bn_grad_input)(const T *dy, const T *xhat, const T *p, const T *q, const T *g, T *dx, long M, int C)
{
    for (long m = 0; m < M; m++) {
        const T *dr = dy + m * C, *xr = xhat + m * C;
        T *o = dx + m * C;
        for (int c = 0; c < C; c++)
            o[c] = ((dr[c] - xr[c] * p[c]) - q[c]) * g[c];
    }
}

#undef F
