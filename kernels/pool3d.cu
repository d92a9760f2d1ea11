// pool3d.cu: 3-D max and average pooling on NCDHW volumes, and nearest-neighbour
// upsampling of up to 5-D arrays by integer factors.
//
// Reference: mpicnn/ops/pool3d.py (PyTorch semantics, floor mode). Row-major layouts,
// T float or double (name_expressions max_pool3d_forward<float>, ...):
//   x, dx (NC, D, H, W)   y, dy, index (NC, Do, Ho, Wo)   NC = N * C
//   Do = (D + 2*pd - KD) / sd + 1   (Ho, Wo alike); the launcher checks the geometry.
//
//   max_pool3d_forward   y = max over the window of the padded input (padding -inf),
//                        index = flat window offset (a*KH + p)*KW + q of the FIRST
//                        maximum in (a, p, q) order, a NaN being the maximum (np.argmax)
//   max_pool3d_backward  dx[v] = sum over the windows w holding v, in (a, p, q) order,
//                        of dy[w] where index[w] is v's offset in w
//   avg_pool3d_forward   y = T(sum over the window in double / (KD*KH*KW))
//                        (count_include_pad: padding counts as 0)
//   avg_pool3d_backward  dx[v] = sum over the windows holding v of dy[w] * T(1/(KD*KH*KW))
//   upsample_nearest_forward   y[i0..i4] = x[i0/f0, ..., i4/f4]   (shapes padded to 5-D
//                        with leading 1s; y's sizes are x's times the factors)
//   upsample_nearest_backward  dx[j0..j4] = sum of dy over the f0 x ... x f4 block it
//                        was copied to, in row-major order
//
// Backward kernels GATHER (one thread per dx element): no atomics, deterministic.
// Launch: 1-D grid-stride over the output elements; any grid and block.

// -inf of each type (NVRTC defines no INFINITY without headers)
__device__ __forceinline__ float negative_infinity(float) { return __int_as_float((int)0xff800000); }
__device__ __forceinline__ double negative_infinity(double)
{
    return __longlong_as_double((long long)0xfff0000000000000ULL);
}

// (nc, i, j, k) of the flat index e of a row-major (NC, A, B, C) array
struct At4 {
    long long nc, i, j, k;
};
__device__ __forceinline__ At4 unravel4(long long e, long long A, long long B, long long C)
{
    At4 at;
    at.k = e % C;
    e /= C;
    at.j = e % B;
    e /= B;
    at.i = e % A;
    at.nc = e / A;
    return at;
}

// The gradient of input element (d, h, w) of volume nc: the sum over the windows holding
// it, in (a, p, q) order, of dy[o] times scale, or for max pooling (MAX) of dy[o] where
// index[o] is the element's offset in its window.
template <typename T, bool MAX>
__device__ __forceinline__ T pool3d_gather(const T* __restrict__ dy, const long long* __restrict__ index,
                                          T scale, At4 at, long long KD, long long KH, long long KW,
                                          long long sd, long long sh, long long sw,
                                          long long pd, long long ph, long long pw,
                                          long long Do, long long Ho, long long Wo)
{
    const long long base = at.nc * Do * Ho * Wo;
    T acc = T(0);
    for (long long a = 0; a < KD; ++a) {
        const long long td = at.i + pd - a;
        if (td < 0) break;
        if (td % sd || td / sd >= Do) continue;
        for (long long p = 0; p < KH; ++p) {
            const long long th = at.j + ph - p;
            if (th < 0) break;
            if (th % sh || th / sh >= Ho) continue;
            for (long long q = 0; q < KW; ++q) {
                const long long tw = at.k + pw - q;
                if (tw < 0) break;
                if (tw % sw || tw / sw >= Wo) continue;
                const long long o = base + ((td / sd) * Ho + th / sh) * Wo + tw / sw;
                if (!MAX)
                    acc += dy[o] * scale;
                else if (index[o] == (a * KH + p) * KW + q)
                    acc += dy[o];
            }
        }
    }
    return acc;
}

template <typename T>
__global__ void max_pool3d_forward(const T* __restrict__ x, T* __restrict__ y,
                                   long long* __restrict__ index, long long NC,
                                   long long D, long long H, long long W,
                                   long long KD, long long KH, long long KW,
                                   long long sd, long long sh, long long sw,
                                   long long pd, long long ph, long long pw,
                                   long long Do, long long Ho, long long Wo)
{
    const long long total = NC * Do * Ho * Wo;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const At4 at = unravel4(e, Do, Ho, Wo);
        const long long i = at.i, j = at.j, k = at.k;
        const T* xs = x + at.nc * D * H * W;
        T m = T(0);
        long long arg = -1;
        for (long long a = 0; a < KD; ++a) {
            const long long d = i * sd - pd + a;
            for (long long p = 0; p < KH; ++p) {
                const long long h = j * sh - ph + p;
                for (long long q = 0; q < KW; ++q) {
                    const long long w = k * sw - pw + q;
                    const bool inside = d >= 0 && d < D && h >= 0 && h < H && w >= 0 && w < W;
                    const T v = inside ? xs[(d * H + h) * W + w] : negative_infinity(T(0));
                    // first maximum; a NaN wins and stays (as np.argmax)
                    if (arg < 0 || (m == m && (v > m || v != v))) {
                        m = v;
                        arg = (a * KH + p) * KW + q;
                    }
                }
            }
        }
        y[e] = m;
        index[e] = arg;
    }
}

template <typename T>
__global__ void max_pool3d_backward(const T* __restrict__ dy, const long long* __restrict__ index,
                                    T* __restrict__ dx, long long NC,
                                    long long D, long long H, long long W,
                                    long long KD, long long KH, long long KW,
                                    long long sd, long long sh, long long sw,
                                    long long pd, long long ph, long long pw,
                                    long long Do, long long Ho, long long Wo)
{
    const long long total = NC * D * H * W;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        dx[e] = pool3d_gather<T, true>(dy, index, T(1), unravel4(e, D, H, W), KD, KH, KW, sd, sh, sw, pd, ph,
                                       pw, Do, Ho, Wo);
    }
}

template <typename T>
__global__ void avg_pool3d_forward(const T* __restrict__ x, T* __restrict__ y, long long NC,
                                   long long D, long long H, long long W,
                                   long long KD, long long KH, long long KW,
                                   long long sd, long long sh, long long sw,
                                   long long pd, long long ph, long long pw,
                                   long long Do, long long Ho, long long Wo)
{
    const long long total = NC * Do * Ho * Wo;
    const double count = (double)(KD * KH * KW);
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const At4 at = unravel4(e, Do, Ho, Wo);
        const long long i = at.i, j = at.j, k = at.k;
        const T* xs = x + at.nc * D * H * W;
        double s = 0.0;
        for (long long a = 0; a < KD; ++a) {
            const long long d = i * sd - pd + a;
            if (d < 0 || d >= D) continue;
            for (long long p = 0; p < KH; ++p) {
                const long long h = j * sh - ph + p;
                if (h < 0 || h >= H) continue;
                for (long long q = 0; q < KW; ++q) {
                    const long long w = k * sw - pw + q;
                    if (w >= 0 && w < W) s += (double)xs[(d * H + h) * W + w];
                }
            }
        }
        y[e] = (T)(s / count);
    }
}

template <typename T>
__global__ void avg_pool3d_backward(const T* __restrict__ dy, T* __restrict__ dx, long long NC,
                                    long long D, long long H, long long W,
                                    long long KD, long long KH, long long KW,
                                    long long sd, long long sh, long long sw,
                                    long long pd, long long ph, long long pw,
                                    long long Do, long long Ho, long long Wo)
{
    const long long total = NC * D * H * W;
    const T scale = (T)(1.0 / (double)(KD * KH * KW));
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        dx[e] = pool3d_gather<T, false>(dy, nullptr, scale, unravel4(e, D, H, W), KD, KH, KW, sd, sh, sw, pd,
                                        ph, pw, Do, Ho, Wo);
    }
}

template <typename T>
__global__ void upsample_nearest_forward(const T* __restrict__ x, T* __restrict__ y,
                                         long long s0, long long s1, long long s2, long long s3,
                                         long long s4, long long f0, long long f1, long long f2,
                                         long long f3, long long f4)
{
    // s0..s4: x's sizes; y's are s_i * f_i
    const long long Y1 = s1 * f1, Y2 = s2 * f2, Y3 = s3 * f3, Y4 = s4 * f4;
    const long long total = s0 * f0 * Y1 * Y2 * Y3 * Y4;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = e;
        const long long i4 = r % Y4;
        r /= Y4;
        const long long i3 = r % Y3;
        r /= Y3;
        const long long i2 = r % Y2;
        r /= Y2;
        const long long i1 = r % Y1, i0 = r / Y1;
        y[e] = x[(((i0 / f0 * s1 + i1 / f1) * s2 + i2 / f2) * s3 + i3 / f3) * s4 + i4 / f4];
    }
}

template <typename T>
__global__ void upsample_nearest_backward(const T* __restrict__ dy, T* __restrict__ dx,
                                          long long s0, long long s1, long long s2, long long s3,
                                          long long s4, long long f0, long long f1, long long f2,
                                          long long f3, long long f4)
{
    // s0..s4: dx's sizes; dy's are s_i * f_i
    const long long Y1 = s1 * f1, Y2 = s2 * f2, Y3 = s3 * f3, Y4 = s4 * f4;
    const long long total = s0 * s1 * s2 * s3 * s4;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = e;
        const long long j4 = r % s4;
        r /= s4;
        const long long j3 = r % s3;
        r /= s3;
        const long long j2 = r % s2;
        r /= s2;
        const long long j1 = r % s1, j0 = r / s1;
        T acc = T(0);
        for (long long a0 = 0; a0 < f0; ++a0)
            for (long long a1 = 0; a1 < f1; ++a1)
                for (long long a2 = 0; a2 < f2; ++a2)
                    for (long long a3 = 0; a3 < f3; ++a3)
                        for (long long a4 = 0; a4 < f4; ++a4)
                            acc += dy[((((j0 * f0 + a0) * Y1 + j1 * f1 + a1) * Y2 + j2 * f2 + a2) * Y3
                                       + j3 * f3 + a3) * Y4 + j4 * f4 + a4];
        dx[e] = acc;
    }
}

// Instantiations, passed by kernels.load("pool3d") as name_expressions:
// @instantiate max_pool3d_forward<float>
// @instantiate max_pool3d_forward<double>
// @instantiate max_pool3d_backward<float>
// @instantiate max_pool3d_backward<double>
// @instantiate avg_pool3d_forward<float>
// @instantiate avg_pool3d_forward<double>
// @instantiate avg_pool3d_backward<float>
// @instantiate avg_pool3d_backward<double>
// @instantiate upsample_nearest_forward<float>
// @instantiate upsample_nearest_forward<double>
// @instantiate upsample_nearest_backward<float>
// @instantiate upsample_nearest_backward<double>
