/* Direct 2-D convolution on NHWC arrays for one element type, included by conv.c once
 * per type with T (element), V (a 64-byte GCC vector of T), IV (the integer vector of as
 * many lanes), VL (lanes of V) and SFX
 * (name suffix) defined.
 *
 * Why direct and not im2col + GEMM: with 16-64 channels the im2col buffer is 9x the
 * input and the GEMMs are too thin for BLAS; here each output pixel's channels are one
 * or two vectors held in registers for a block of pixels, and the input is read in
 * place (broadcast loads), so the work is FMAs from L1/L2.
 *
 * Weights arrive packed by the caller (native.py), zero-padded to whole vectors:
 *   forward    wp[ob][ki][kj][c][OB]      OB = NV*VL outputs per block, ob < ceil(O/OB)
 *   input grad wt[cb][ki][kj][o][CB]      CB = NV*VL input channels per block
 *   weight grad accumulates dwp[ob][ki][kj][c][OB]
 * Padded inputs (xpad, dxpad) are (Hp, Wp, C) scratch buffers of one sample, borders zero.
 */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define F(name) CAT(name, SFX)

static inline ALWAYS_INLINE V F(load)(const T *p) { V v; __builtin_memcpy(&v, p, sizeof v); return v; }
/* x in every lane (x - (+0) is exact for every x, so it compiles to one broadcast). */
static inline ALWAYS_INLINE V F(splat)(T x) { return x - (V){}; }
static inline ALWAYS_INLINE void F(store)(T *p, V v) { __builtin_memcpy(p, &v, sizeof v); }

/* Sample n of x (N, H, W, C) as the kernels read it: in place without padding, else
 * copied into the interior of xpad (H + 2ph, W + 2pw, C), whose borders the caller
 * zeroed once per call. */
static const T *F(sample)(const T *x, int n, T *xpad, int H, int W, int C, int ph, int pw)
{
    const T *xs = x + (long)n * H * W * C;
    if (!ph && !pw)
        return xs;
    for (int h = 0; h < H; h++)
        __builtin_memcpy(xpad + ((long)(h + ph) * (W + 2 * pw) + pw) * C, xs + (long)h * W * C, sizeof(T) * W * C);
    return xpad;
}

/* Sample xs (H, W, C) into the planar xq (C, xplane) with rows of Wx, at (ph, pw). */
static void F(planar_sample)(const T *xs, T *xq, int H, int W, int C, int ph, int pw, int Wx, long xplane)
{
    for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++)
            for (int c = 0; c < C; c++)
                xq[c * xplane + (long)(h + ph) * Wx + w + pw] = xs[((long)h * W + w) * C + c];
}

/* JB output pixels x NV vectors of outputs: acc = (first ? bias : out) + the sum over
 * taps and the cn channels of this block (weights wt[tap * wtap + c * OB]). */
static inline ALWAYS_INLINE void F(fwd_tile)(
    const T *xr, long pixs, long tapcol, long taprow, const T *wb, long wtap, const T *bb,
    int first, int KH, int KW, int cn, T *yp, long ypix, int ovalid, const int JB, const int NV)
{
    const int OB = NV * VL;
    V acc[12][4];
    for (int jj = 0; jj < JB; jj++) {
        const T *init = first ? bb : yp + jj * ypix;
        T tmp[4 * VL];
        if (!first && ovalid < OB) {  /* a partial block: read only the valid outputs */
            __builtin_memset(tmp, 0, sizeof tmp);
            __builtin_memcpy(tmp, init, sizeof(T) * ovalid);
            init = tmp;
        }
        for (int v = 0; v < NV; v++)
            acc[jj][v] = F(load)(init + v * VL);
    }
    for (int ki = 0; ki < KH; ki++) {
        for (int kj = 0; kj < KW; kj++) {
            const T *xt = xr + ki * taprow + kj * tapcol;
            const T *wt = wb + (long)(ki * KW + kj) * wtap;
            for (int c = 0; c < cn; c++) {
                V wv[4];
                for (int v = 0; v < NV; v++)
                    wv[v] = F(load)(wt + (long)c * OB + v * VL);
                for (int jj = 0; jj < JB; jj++) {
                    V xb = F(splat)(xt[jj * pixs + c]);
                    for (int v = 0; v < NV; v++)
                        acc[jj][v] += xb * wv[v];
                }
            }
        }
    }
    for (int jj = 0; jj < JB; jj++) {
        T *out = yp + jj * ypix;
        if (ovalid >= OB) {
            for (int v = 0; v < NV; v++)
                F(store)(out + v * VL, acc[jj][v]);
        } else {
            T tmp[4 * VL];
            __builtin_memcpy(tmp, acc[jj], sizeof(T) * OB);
            __builtin_memcpy(out, tmp, sizeof(T) * ovalid);
        }
    }
}

/* Channels per block of the reduction, so that the block's weights for all taps
 * (KH*KW*cblk*B values) stay in L1 while a row of output tiles reuses them. */
static int F(channel_block)(int channels, int KH, int KW, int B)
{
    int cblk = (int)(L1_WEIGHT_BYTES / ((long)KH * KW * B * sizeof(T)));
    cblk = cblk > channels ? channels : cblk;
    return cblk < 1 ? 1 : cblk;
}

/* A row of Wo output pixels as register tiles: CALL(jb, nv) for pixel j onwards (j runs);
 * the widest tile for NV vectors first, then 4, 2 and 1 for the rest (an 8-pixel row
 * takes 4+4 rather than 6+1+1). Shared by the forward and the input-gradient scatter. */
#define ROW_TILES(CALL, JBC, NVC) \
    for (; j + JBC <= Wo; j += JBC) CALL(JBC, NVC); \
    for (; j + 4 <= Wo; j += 4) CALL(4, NVC); \
    for (; j + 2 <= Wo; j += 2) CALL(2, NVC); \
    for (; j < Wo; j++) CALL(1, NVC);
#define ROW_OF_TILES(CALL) \
    if (NV == 1) { \
        ROW_TILES(CALL, FWD_JB1, 1) \
    } else if (NV == 2) { \
        ROW_TILES(CALL, FWD_JB2, 2) \
    } else if (Wo % FWD_JB4 && Wo % 4 == 0) { \
        ROW_TILES(CALL, 4, 4) \
    } else { \
        ROW_TILES(CALL, FWD_JB4, 4) \
    }

/* One sample of the forward: xs (padded) read with row step xrs (a stride's rows apart)
 * and pixel step pixs, ys written with row step yrow and pixel step ypix (an input
 * gradient's phase writes every sh-th row and sw-th pixel of dx in place). */
static void F(fwd_sample)(const T *xs, long xrs, long pixs, long tapcol, long taprow, const T *wp, const T *bp,
                          T *ys, long yrow, long ypix, int C, int KH, int KW, int Ho, int Wo, int O, int NV)
{
    const int OB = NV * VL, nob = (O + OB - 1) / OB;
    const long wtap = (long)C * OB, wblock = KH * KW * wtap;
    const int cblk = F(channel_block)(C, KH, KW, OB);
    for (int ob = 0; ob < nob; ob++) {
        const T *bb = bp + ob * OB;
        const int ovalid = O - ob * OB;
        /* one block at least: with no input channels (a channel split's empty block)
         * it writes the bias alone */
        for (int c0 = 0; c0 == 0 || c0 < C; c0 += cblk) {
            const int cn = C - c0 < cblk ? C - c0 : cblk, first = c0 == 0;
            const T *wb = wp + ob * wblock + (long)c0 * OB;
            for (int i = 0; i < Ho; i++) {
                const T *xr = xs + (long)i * xrs + c0;
                T *yr = ys + (long)i * yrow + ob * OB;
                int j = 0;
#define FWD_CALL(JB, NVC) F(fwd_tile)(xr + j * pixs, pixs, tapcol, taprow, wb, wtap, bb, first, KH, KW, cn, \
                                        yr + (long)j * ypix, ypix, ovalid, JB, NVC)
                ROW_OF_TILES(FWD_CALL)
#undef FWD_CALL
            }
        }
    }
}

void F(conv_fwd)(const T *x, const T *wp, const T *bp, T *y, T *xpad,
                        int N, int H, int W, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                        int dh, int dw, int Ho, int Wo, int O, int NV)
{
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    const long xrs = (long)Wp * C, pixs = (long)sw * C, tapcol = (long)dw * C, taprow = (long)dh * xrs;
    if (ph || pw)
        __builtin_memset(xpad, 0, sizeof(T) * Hp * Wp * C);
    for (int n = 0; n < N; n++) {
        const T *xs = F(sample)(x, n, xpad, H, W, C, ph, pw);
        F(fwd_sample)(xs, sh * xrs, pixs, tapcol, taprow, wp, bp, y + (long)n * Ho * Wo * O, (long)Wo * O, O,
                      C, KH, KW, Ho, Wo, O, NV);
    }
}

/* Input gradient at stride > 1, dilation 1, as sh*sw stride-1 correlations, one per
 * phase (a, b) of dx: its pixels (Y*sh + a, X*sw + b) take dy over the taps ki = a+ph
 * (mod sh), kj = b+pw (mod sw), flipped (native.py packs each phase's sub-kernel like
 * the forward's weights, dx channels as outputs, at wph + ph_geo[8]). Each phase runs
 * the forward's register tiles over the sample's dy copied into dypad (Hq, Wq, O) at
 * (pt, pl), and writes its pixels of dx in place: no scatter of every tap into memory.
 * ph_geo per phase: a, b, row and column of its first read in dypad, rows, columns,
 * kernel rows, kernel columns (0 when no tap reaches the phase: its pixels are zero),
 * weight offset.
 * bzero: C zeros, the bias. */
void F(conv_dx_phases)(const T *dy, const T *wph, const long *ph_geo, const T *bzero, T *dx, T *dypad,
                       int N, int H, int W, int C, int Ho, int Wo, int O, int sh, int sw, int pt, int pl,
                       int Hq, int Wq, int NV)
{
    const long qrs = (long)Wq * O;
    __builtin_memset(dypad, 0, sizeof(T) * Hq * qrs);
    for (int n = 0; n < N; n++) {
        const T *dys = dy + (long)n * Ho * Wo * O;
        for (int i = 0; i < Ho; i++)
            __builtin_memcpy(dypad + (long)(i + pt) * qrs + (long)pl * O, dys + (long)i * Wo * O, sizeof(T) * Wo * O);
        T *dxs = dx + (long)n * H * W * C;
        for (int p = 0; p < sh * sw; p++) {
            const long *g = ph_geo + 9 * p;
            const int a = g[0], b = g[1], Hy = g[4], Wy = g[5], U = g[6], Vk = g[7];
            T *ys = dxs + ((long)a * W + b) * C;
            if (U == 0 || Vk == 0) {  /* no tap reaches these pixels */
                for (int Y = 0; Y < Hy; Y++)
                    for (int X = 0; X < Wy; X++)
                        __builtin_memset(ys + (long)Y * sh * W * C + (long)X * sw * C, 0, sizeof(T) * C);
                continue;
            }
            F(fwd_sample)(dypad + g[2] * qrs + g[3] * O, qrs, O, O, qrs, wph + g[8], bzero,
                          ys, (long)sh * W * C, (long)sw * C, O, U, Vk, Hy, Wy, C, NV);
        }
    }
}

/* The sum of v's lanes, halving the vector (lane order of the sums is fixed). */
static inline ALWAYS_INLINE T F(lane_sum)(V v)
{
    typedef T H __attribute__((vector_size(sizeof(V) / 2)));
    typedef T Q __attribute__((vector_size(sizeof(V) / 4)));
#if VL == 16
    H h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    Q q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
#else
    H h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    Q q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
    return q[0] + q[1];
#endif
}

/* Forward for few outputs (OC <= VL/2) and whole vectors of input channels: JB pixels
 * x OC outputs, each accumulated as a vector over VL input channels and summed across
 * lanes at the end, so every FMA does VL useful products (the kernel above would fill
 * OC of VL lanes). Weights wr[ki][kj][cv][o][VL], cv < C/VL. LeNet-5's 16->6 input
 * gradient (a transposed forward) is the case this is for. */
static inline ALWAYS_INLINE void F(fwd_reduce_tile)(
    const T *xr, long pixs, long tapcol, long taprow, const T *wr, const T *bias,
    int ki0, int ki1, int KW, int ncv, T *yp, const int JB, const int OC)
{
    V acc[8][8];
    for (int jj = 0; jj < JB; jj++)
        for (int o = 0; o < OC; o++)
            acc[jj][o] = (V){};
    for (int ki = ki0; ki < ki1; ki++) {
        for (int kj = 0; kj < KW; kj++) {
            const T *xt = xr + ki * taprow + kj * tapcol;
            const T *wt = wr + (long)(ki * KW + kj) * ncv * OC * VL;
            for (int cv = 0; cv < ncv; cv++) {
                V wv[8];
                for (int o = 0; o < OC; o++)
                    wv[o] = F(load)(wt + ((long)cv * OC + o) * VL);
                for (int jj = 0; jj < JB; jj++) {
                    V xv = F(load)(xt + jj * pixs + cv * VL);
                    for (int o = 0; o < OC; o++)
                        acc[jj][o] += xv * wv[o];
                }
            }
        }
    }
    for (int jj = 0; jj < JB; jj++)
        for (int o = 0; o < OC; o++)
            yp[jj * OC + o] = bias[o] + F(lane_sum)(acc[jj][o]);
}

void F(conv_fwd_reduce)(const T *x, const T *wr, const T *bias, T *y, T *xpad,
                        int N, int H, int W, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                        int dh, int dw, int Ho, int Wo, int O)
{
    const int Hp = H + 2 * ph, Wp = W + 2 * pw, ncv = C / VL;
    const long xrs = (long)Wp * C, pixs = (long)sw * C, tapcol = (long)dw * C, taprow = (long)dh * xrs;
    if (ph || pw)
        __builtin_memset(xpad, 0, sizeof(T) * Hp * Wp * C);
    for (int n = 0; n < N; n++) {
        const T *xs = F(sample)(x, n, xpad, H, W, C, ph, pw);
        T *ys = y + (long)n * Ho * Wo * O;
        for (int i = 0; i < Ho; i++) {
            const T *xr = xs + (long)i * sh * xrs;
            T *yr = ys + (long)i * Wo * O;
            /* taps on padding rows only add zeros: skip them (half the work of LeNet-5's
             * input gradient, a transposed convolution padded by 4 on a 10x10 map) */
            int ki0 = 0, ki1 = KH;
            while (ki0 < KH && i * sh + ki0 * dh < ph)
                ki0++;
            while (ki1 > ki0 && i * sh + (ki1 - 1) * dh >= ph + H)
                ki1--;
            int j = 0;
            /* literal tile sizes: JB x OC accumulators plus OC weights fit 32 registers */
#define RED_ROW(JBC, OCC) \
    for (; j + JBC <= Wo; j += JBC) \
        F(fwd_reduce_tile)(xr + j * pixs, pixs, tapcol, taprow, wr, bias, ki0, ki1, KW, ncv, yr + (long)j * O, \
                           JBC, OCC); \
    for (; j < Wo; j++) \
        F(fwd_reduce_tile)(xr + j * pixs, pixs, tapcol, taprow, wr, bias, ki0, ki1, KW, ncv, yr + (long)j * O, \
                           1, OCC);
            switch (O) {
            case 1: RED_ROW(8, 1) break;
            case 2: RED_ROW(8, 2) break;
            case 3: RED_ROW(7, 3) break;
            case 4: RED_ROW(6, 4) break;
            case 5: RED_ROW(4, 5) break;
            case 6: RED_ROW(4, 6) break;
            case 7: RED_ROW(3, 7) break;
            case 8: RED_ROW(2, 8) break;  /* at most 8 outputs: the caller checks */
            }
#undef RED_ROW
        }
    }
}

/* Input gradient, JB output pixels x NV vectors of input channels: for each tap, the
 * pixels' contributions sum over the O outputs in registers, then are added into the
 * tap's input pixels of dxpad. */
static inline ALWAYS_INLINE void F(dx_tile)(
    const T *dyp, long dypix, const T *wb, long wtap, T *dxr, long pixs, long tapcol, long taprow,
    int KH, int KW, int on, int cvalid, const int JB, const int NV)
{
    const int CB = NV * VL;
    for (int ki = 0; ki < KH; ki++) {
        for (int kj = 0; kj < KW; kj++) {
            const T *wt = wb + (long)(ki * KW + kj) * wtap;
            V acc[12][4];
            for (int jj = 0; jj < JB; jj++)
                for (int v = 0; v < NV; v++)
                    acc[jj][v] = (V){};
            for (int o = 0; o < on; o++) {
                V wv[4];
                for (int v = 0; v < NV; v++)
                    wv[v] = F(load)(wt + (long)o * CB + v * VL);
                for (int jj = 0; jj < JB; jj++) {
                    V g = F(splat)(dyp[jj * dypix + o]);
                    for (int v = 0; v < NV; v++)
                        acc[jj][v] += g * wv[v];
                }
            }
            T *dt = dxr + ki * taprow + kj * tapcol;
            for (int jj = 0; jj < JB; jj++) {
                T *d = dt + jj * pixs;
                if (cvalid >= CB) {
                    for (int v = 0; v < NV; v++)
                        F(store)(d + v * VL, F(load)(d + v * VL) + acc[jj][v]);
                } else {
                    T tmp[4 * VL];
                    __builtin_memcpy(tmp, acc[jj], sizeof(T) * CB);
                    for (int c = 0; c < cvalid; c++)
                        d[c] += tmp[c];
                }
            }
        }
    }
}

void F(conv_dx)(const T *dy, const T *wt, T *dx, T *dxpad,
                       int N, int H, int W, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                       int dh, int dw, int Ho, int Wo, int O, int NV)
{
    const int CB = NV * VL, ncb = (C + CB - 1) / CB;
    /* dxpad covers every input pixel a tap reaches (with a floor-mode output it may
     * reach less than H + 2*ph; never more). */
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    const long dxrs = (long)Wp * C, pixs = (long)sw * C, tapcol = (long)dw * C, taprow = (long)dh * dxrs;
    const long wtap = (long)O * CB, wblock = KH * KW * wtap;
    const int oblk = F(channel_block)(O, KH, KW, CB);
    for (int n = 0; n < N; n++) {
        __builtin_memset(dxpad, 0, sizeof(T) * Hp * Wp * C);
        const T *dys = dy + (long)n * Ho * Wo * O;
        for (int cb = 0; cb < ncb; cb++) {
            const int cvalid = C - cb * CB;
            for (int o0 = 0; o0 < O; o0 += oblk) {
                const int on = O - o0 < oblk ? O - o0 : oblk;
                const T *wb = wt + cb * wblock + (long)o0 * CB;
                for (int i = 0; i < Ho; i++) {
                    const T *dyr = dys + (long)i * Wo * O + o0;
                    T *dxr = dxpad + (long)i * sh * dxrs + cb * CB;
                    int j = 0;
#define DX_CALL(JB, NVC) F(dx_tile)(dyr + (long)j * O, O, wb, wtap, dxr + j * pixs, pixs, tapcol, taprow, KH, KW, \
                                      on, cvalid, JB, NVC)
                    ROW_OF_TILES(DX_CALL)
#undef DX_CALL
                }
            }
        }
        T *dxs = dx + (long)n * H * W * C;
        for (int h = 0; h < H; h++)
            __builtin_memcpy(dxs + (long)h * W * C, dxpad + ((long)(h + ph) * Wp + pw) * C, sizeof(T) * W * C);
    }
}

/* Weight gradient of CBW input channels x NV vectors of outputs at one tap, summed over
 * one sample's output pixels; dy rows are padded to whole vectors (dyo values apart). */
static inline ALWAYS_INLINE void F(dw_tile)(
    const T *xs, long xrs, long pixs, const T *dys, int dyo, int Ho, int Wo, T *dwb, int OB,
    int cvalid, const int CBW, const int NV)
{
    V acc[12][4];
    for (int cc = 0; cc < CBW; cc++)
        for (int v = 0; v < NV; v++)
            acc[cc][v] = (V){};
    for (int i = 0; i < Ho; i++) {
        const T *xr = xs + i * xrs;
        const T *dyr = dys + (long)i * Wo * dyo;
        for (int j = 0; j < Wo; j++) {
            const T *xp = xr + j * pixs;
            V gv[4];
            for (int v = 0; v < NV; v++)
                gv[v] = F(load)(dyr + (long)j * dyo + v * VL);
            for (int cc = 0; cc < CBW; cc++) {
                V xb = F(splat)(xp[cc]);
                for (int v = 0; v < NV; v++)
                    acc[cc][v] += xb * gv[v];
            }
        }
    }
    for (int cc = 0; cc < CBW && cc < cvalid; cc++)
        for (int v = 0; v < NV; v++)
            F(store)(dwb + (long)cc * OB + v * VL, F(load)(dwb + (long)cc * OB + v * VL) + acc[cc][v]);
}

void F(conv_dw)(const T *x, const T *dy, T *dwp, T *xpad,
                       int N, int H, int W, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                       int dh, int dw, int Ho, int Wo, int Ostride, int NV)
{
    /* dy: (N, Ho, Wo, Ostride), Ostride a whole number of blocks of OB outputs. */
    const int OB = NV * VL, nob = Ostride / OB;
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    const long xrs = (long)Wp * C * sh, pixs = (long)sw * C;
    if (ph || pw)
        __builtin_memset(xpad, 0, sizeof(T) * Hp * Wp * C);
    for (int n = 0; n < N; n++) {
        const T *xs = F(sample)(x, n, xpad, H, W, C, ph, pw);
        const T *dys = dy + (long)n * Ho * Wo * Ostride;
        for (int ob = 0; ob < nob; ob++) {
            for (int ki = 0; ki < KH; ki++) {
                for (int kj = 0; kj < KW; kj++) {
                    const T *xt = xs + ((long)ki * dh * Wp + (long)kj * dw) * C;
                    T *dwt = dwp + (((long)ob * KH + ki) * KW + kj) * C * OB;
                    const T *dyb = dys + ob * OB;
                    T *dwc = dwt;
                    int c = 0;
                    /* literal NV per branch: the tiles' loops unroll into registers */
#define DW_TILES(NVC, CBIG) \
    for (; c + CBIG <= C; c += CBIG) F(dw_tile)(xt + c, xrs, pixs, dyb, Ostride, Ho, Wo, dwc + (long)c * OB, OB, CBIG, CBIG, NVC); \
    for (; c + 4 <= C; c += 4) F(dw_tile)(xt + c, xrs, pixs, dyb, Ostride, Ho, Wo, dwc + (long)c * OB, OB, 4, 4, NVC); \
    for (; c < C; c++) F(dw_tile)(xt + c, xrs, pixs, dyb, Ostride, Ho, Wo, dwc + (long)c * OB, OB, 1, 1, NVC);
                    if (NV == 1) {
                        DW_TILES(1, 8)
                    } else if (NV == 2) {
                        DW_TILES(2, 8)
                    } else {
                        DW_TILES(4, 4)
                    }
#undef DW_TILES
                }
            }
        }
    }
}

/* Forward for few input channels and fewer outputs than lanes (first layers, LeNet-5's
 * 1->6) at stride 1 along W, where conv_fwd would fill O of VL lanes: the sample is
 * copied planar, xq (C, Hp, Wx) with Wx = Wq + (KW-1)*dw and Wq = Wo rounded up to whole
 * vectors, and vectors run along a row's output pixels. A tile is OB outputs x NVB
 * vectors of pixels in registers over every tap; then it is scattered into NHWC y. */
static inline ALWAYS_INLINE void F(fwd_rows_tile)(
    const T *xr, long xplane, long taprow, long tapcol, int C, int KH, int KW, const T *w, const T *bias,
    T *yr, int O, int jvalid, const int OB, const int NVB)
{
    V acc[8][2];
    for (int o = 0; o < OB; o++)
        for (int v = 0; v < NVB; v++)
            acc[o][v] = F(splat)(bias[o]);
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < KH; ki++)
            for (int kj = 0; kj < KW; kj++) {
                const T *xt = xr + c * xplane + ki * taprow + kj * tapcol;
                V xv[2];
                for (int v = 0; v < NVB; v++)
                    xv[v] = F(load)(xt + v * VL);
                const T *wt = w + ((long)c * KH + ki) * KW + kj;
                for (int o = 0; o < OB; o++) {
                    const V wv = F(splat)(wt[(long)o * C * KH * KW]);
                    for (int v = 0; v < NVB; v++)
                        acc[o][v] += xv[v] * wv;
                }
            }
    T tmp[8][2 * VL];
    for (int o = 0; o < OB; o++)
        for (int v = 0; v < NVB; v++)
            F(store)(tmp[o] + v * VL, acc[o][v]);
    for (int j = 0; j < jvalid; j++)
        for (int o = 0; o < OB; o++)
            yr[(long)j * O + o] = tmp[o][j];
}

void F(conv_fwd_rows)(const T *x, const T *w, const T *bias, T *y, T *xq,
                      int N, int H, int W, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                      int dh, int dwl, int Ho, int Wo, int O)
{
    (void)sw;  /* 1: the caller checks */
    const int Wq = (Wo + VL - 1) / VL * VL, Hx = H + 2 * ph, Wx = Wq + (KW - 1) * dwl;
    const long xplane = (long)Hx * Wx;
    __builtin_memset(xq, 0, sizeof(T) * C * xplane);
    for (int n = 0; n < N; n++) {
        const T *xs = x + (long)n * H * W * C;
        F(planar_sample)(xs, xq, H, W, C, ph, pw, Wx, xplane);
        T *ys = y + (long)n * Ho * Wo * O;
        for (int i = 0; i < Ho; i++)
            for (int j0 = 0; j0 < Wo; j0 += 2 * VL)
                for (int o0 = 0; o0 < O; o0 += 8) {
                    const int ob = O - o0 < 8 ? O - o0 : 8, jvalid = Wo - j0 < 2 * VL ? Wo - j0 : 2 * VL;
                    const T *xr = xq + (long)i * sh * Wx + j0;
                    T *yr = ys + ((long)i * Wo + j0) * O + o0;
                    const T *wo = w + (long)o0 * C * KH * KW;
#define FWR_CALL(OBC, NVBC) F(fwd_rows_tile)(xr, xplane, (long)dh * Wx, dwl, C, KH, KW, wo, bias + o0, yr, O, \
                                             jvalid, OBC, NVBC)
#define FWR_OUTPUTS(NVBC) \
    switch (ob) { \
    case 1: FWR_CALL(1, NVBC); break; \
    case 2: FWR_CALL(2, NVBC); break; \
    case 3: FWR_CALL(3, NVBC); break; \
    case 4: FWR_CALL(4, NVBC); break; \
    case 5: FWR_CALL(5, NVBC); break; \
    case 6: FWR_CALL(6, NVBC); break; \
    case 7: FWR_CALL(7, NVBC); break; \
    default: FWR_CALL(8, NVBC); break; \
    }
                    if (jvalid > VL) {
                        FWR_OUTPUTS(2)
                    } else {
                        FWR_OUTPUTS(1)
                    }
#undef FWR_OUTPUTS
#undef FWR_CALL
                }
    }
}

/* Weight gradient for few input channels (first layers) at stride 1 along W, where
 * conv_dw's tiles of 1-3 channels are too thin: each sample is copied planar, xq (C, Hp,
 * Wx) and dyq (O, Ho * Wq + VL) with Wq = Wo rounded up to whole vectors (zeros beyond Wo),
 * and vectors run along a row's output pixels. A tile is KJB adjacent taps x OB
 * outputs, summed over the sample's rows in registers, then across lanes into dw. */
static inline ALWAYS_INLINE void F(dw_rows_step)(
    V acc[4][6], const T *xp, long tapcol, const T *gp, long gplane, IV mask,
    const int KJB, const int OB, const int MASKED)
{
    V xv[4];
    for (int t = 0; t < KJB; t++) {
        xv[t] = F(load)(xp + t * tapcol);
        if (MASKED)  /* lanes past the row: 0 * x would be NaN for an infinite x */
            xv[t] = (V)((IV)xv[t] & mask);
    }
    for (int o = 0; o < OB; o++) {
        V g = F(load)(gp + o * gplane);
        for (int t = 0; t < KJB; t++)
            acc[t][o] += xv[t] * g;
    }
}

static inline ALWAYS_INLINE void F(dw_rows_tile)(
    const T *xc, long rowstep, long tapcol, const T *gq, int Wq, long gplane, int Ho, int nfull,
    int tail, IV mask, T *dwp, long dwo, const int KJB, const int OB)
{
    V acc[4][6];
    for (int t = 0; t < KJB; t++)
        for (int o = 0; o < OB; o++)
            acc[t][o] = (V){};
    for (int i = 0; i < Ho; i++) {
        const T *xr = xc + i * rowstep, *gr = gq + (long)i * Wq;
        for (int jv = 0; jv < nfull; jv++)
            F(dw_rows_step)(acc, xr + jv * VL, tapcol, gr + jv * VL, gplane, mask, KJB, OB, 0);
        if (tail)
            F(dw_rows_step)(acc, xr + nfull * VL, tapcol, gr + nfull * VL, gplane, mask, KJB, OB, 1);
    }
    for (int t = 0; t < KJB; t++)
        for (int o = 0; o < OB; o++)
            dwp[o * dwo + t] += F(lane_sum)(acc[t][o]);
}

void F(conv_dw_rows)(const T *x, const T *dy, T *dw, T *xq, T *dyq,
                     int N, int H, int W, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                     int dh, int dwl, int Ho, int Wo, int O)
{
    (void)sw;  /* 1: the caller checks */
    const int Wq = (Wo + VL - 1) / VL * VL, nfull = Wo / VL, tail = Wo % VL;
    const int Hx = H + 2 * ph, Wx = Wq + (KW - 1) * dwl;
    /* one spare vector per dy plane: planes 4 KB apart would share L1 sets in the copy */
    const long xplane = (long)Hx * Wx, gplane = (long)Ho * Wq + VL, dwo = (long)C * KH * KW;
    IV mask;
    for (int l = 0; l < VL; l++)
        mask[l] = l < tail ? -1 : 0;
    __builtin_memset(dw, 0, sizeof(T) * O * dwo);
    __builtin_memset(xq, 0, sizeof(T) * C * xplane);
    __builtin_memset(dyq, 0, sizeof(T) * O * gplane);
    for (int n = 0; n < N; n++) {
        const T *xs = x + (long)n * H * W * C, *dys = dy + (long)n * Ho * Wo * O;
        F(planar_sample)(xs, xq, H, W, C, ph, pw, Wx, xplane);
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++)
                for (int o = 0; o < O; o++)
                    dyq[o * gplane + (long)i * Wq + j] = dys[((long)i * Wo + j) * O + o];
        for (int c = 0; c < C; c++)
            for (int ki = 0; ki < KH; ki++) {
                const T *xk = xq + c * xplane + (long)ki * dh * Wx;
                for (int kj = 0; kj < KW;) {
                    const int kjb = KW - kj < 4 ? KW - kj : 4;
                    for (int o0 = 0; o0 < O; o0 += 6) {
                        const int ob = O - o0 < 6 ? O - o0 : 6;
                        T *dwp = dw + o0 * dwo + ((long)c * KH + ki) * KW + kj;
                        const T *xc = xk + (long)kj * dwl, *gq = dyq + o0 * gplane;
#define DWR_CALL(KJBC, OBC) F(dw_rows_tile)(xc, (long)sh * Wx, dwl, gq, Wq, gplane, Ho, nfull, tail, mask, \
                                            dwp, dwo, KJBC, OBC)
#define DWR_OUTPUTS(KJBC) \
    switch (ob) { \
    case 1: DWR_CALL(KJBC, 1); break; \
    case 2: DWR_CALL(KJBC, 2); break; \
    case 3: DWR_CALL(KJBC, 3); break; \
    case 4: DWR_CALL(KJBC, 4); break; \
    case 5: DWR_CALL(KJBC, 5); break; \
    default: DWR_CALL(KJBC, 6); break; \
    }
                        switch (kjb) {
                        case 1: DWR_OUTPUTS(1) break;
                        case 2: DWR_OUTPUTS(2) break;
                        case 3: DWR_OUTPUTS(3) break;
                        default: DWR_OUTPUTS(4) break;
                        }
#undef DWR_OUTPUTS
#undef DWR_CALL
                    }
                    kj += kjb;
                }
            }
    }
}

/* Weight gradient of RGB-like first layers (1-3 input channels, 3 kernel columns at
 * dilation 1 along W) with whole vectors of outputs, where conv_dw's tiles of 1-3
 * channels are too thin: a tile holds KR kernel rows x M = 3*C taps x NV vectors of
 * outputs in registers over the whole sample, so each pixel's dy vectors are loaded once
 * for up to 27 FMAs. The taps of one kernel row are M consecutive values of the padded
 * sample; dwp and dy as in conv_dw. */
static inline ALWAYS_INLINE void F(dw_taps_tile)(
    const T *xs, long xrs, long pixs, long taprow, const T *dys, int dyo, int Ho, int Wo, T *dwb, int OB,
    const int KR, const int M, const int NV)
{
    V acc[3][9][2];
    for (int r = 0; r < KR; r++)
        for (int m = 0; m < M; m++)
            for (int v = 0; v < NV; v++)
                acc[r][m][v] = (V){};
    for (int i = 0; i < Ho; i++) {
        const T *xr = xs + i * xrs, *dyr = dys + (long)i * Wo * dyo;
        for (int j = 0; j < Wo; j++) {
            const T *xp = xr + j * pixs;
            V g[2];
            for (int v = 0; v < NV; v++)
                g[v] = F(load)(dyr + (long)j * dyo + v * VL);
            for (int r = 0; r < KR; r++)
                for (int m = 0; m < M; m++) {
                    const V xb = F(splat)(xp[r * taprow + m]);
                    for (int v = 0; v < NV; v++)
                        acc[r][m][v] += xb * g[v];
                }
        }
    }
    for (int r = 0; r < KR; r++)
        for (int m = 0; m < M; m++)
            for (int v = 0; v < NV; v++) {
                T *d = dwb + ((long)r * M + m) * OB + v * VL;
                F(store)(d, F(load)(d) + acc[r][m][v]);
            }
}

void F(conv_dw_taps)(const T *x, const T *dy, T *dwp, T *xpad,
                     int N, int H, int W, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                     int dh, int dwl, int Ho, int Wo, int Ostride, int NV)
{
    (void)dwl;  /* 1, KW == 3 and 1 <= C <= 3: the caller checks */
    const int OB = NV * VL, nob = Ostride / OB, M = KW * C;
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    const long xrs = (long)Wp * C * sh, pixs = (long)sw * C, taprow = (long)dh * Wp * C;
    if (ph || pw)
        __builtin_memset(xpad, 0, sizeof(T) * Hp * Wp * C);
    for (int n = 0; n < N; n++) {
        const T *xs = F(sample)(x, n, xpad, H, W, C, ph, pw);
        const T *dys = dy + (long)n * Ho * Wo * Ostride;
        for (int ob = 0; ob < nob; ob++)
            for (int v0 = 0; v0 < NV; v0 += 2) {  /* two vectors of outputs at a time */
                const int nv = NV - v0 < 2 ? NV - v0 : 2;
                const T *dyb = dys + ob * OB + v0 * VL;
                for (int ki = 0; ki < KH;) {
                    /* one vector: 3 kernel rows x M taps (27 registers); two: one row */
                    const int kr = nv == 1 && KH - ki >= 3 ? 3 : 1;
                    T *dwb = dwp + ((long)ob * KH + ki) * KW * C * OB + v0 * VL;
                    const T *xk = xs + ki * taprow;
#define DWT_CALL(KRC, MC, NVC) F(dw_taps_tile)(xk, xrs, pixs, taprow, dyb, Ostride, Ho, Wo, dwb, OB, KRC, MC, NVC)
#define DWT_TAPS(KRC, NVC) \
    switch (M) { \
    case 3: DWT_CALL(KRC, 3, NVC); break; \
    case 6: DWT_CALL(KRC, 6, NVC); break; \
    case 9: DWT_CALL(KRC, 9, NVC); break; \
    }
                    if (nv == 2) {
                        DWT_TAPS(1, 2)
                    } else if (kr == 3) {
                        DWT_TAPS(3, 1)
                    } else {
                        DWT_TAPS(1, 1)
                    }
#undef DWT_TAPS
#undef DWT_CALL
                    ki += kr;
                }
            }
    }
}

#undef ROW_TILES
#undef ROW_OF_TILES
#undef F
