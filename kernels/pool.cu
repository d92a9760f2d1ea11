// pool.cu: max and average pooling (windowed, with padding) and global average, max
// and RMS pooling, forward and backward, on channels-last arrays.
//
// Layouts (row-major): x, dx (N, H, W, C); windowed y, dy (N, Ho, Wo, C); global y,
// dy (N, C); global max index (N, C) int64 (h*W + w of the maximum).
// T is float or double (name_expressions max_pool_forward<float>, ...).
// Reference: mpicnn/ops/pool.py (PyTorch semantics, floor mode,
// Ho = (H + 2*ph - KH) / sh + 1, padding at most half the window, so every window
// holds at least one real element).
//
//   max_pool_forward     y = max over the window (padding is -inf, so it never wins;
//                        NaN propagates)
//   max_pool_backward    each window's dy goes to its FIRST maximum in window order
//                        (ki, kj row-major; padding counts as -inf); overlapping
//                        windows add up. Gathered per dx element: no atomics.
//   avg_pool_forward     y = (sum over the window, zero padding) * scale,
//                        scale = 1/(KH*KW) rounded to T (count_include_pad)
//   avg_pool_backward    dx = sum over the windows holding the element of dy * scale
//   global_avg_pool_*    y = T(sum_hw x / HW) summed in double;  dx = dy * scale
//   global_max_pool_*    y = max_hw x and its first index (NaN wins, as np.argmax);
//                        dx = dy at that index, 0 elsewhere
//   global_rms_pool_*    y = T(sqrt(sum_hw x^2 / HW + eps)) in double;
//                        dx = x * (dy / (y * HW)), 0 where y * HW == 0
//
// Backward sums run over windows in the order the NumPy reference adds them
// (ki, then kj, ascending), so they round the same way.
//
// Launch: windowed pools and the global backward kernels: 1-D grid-stride over the
// output elements, any shape. Global forward reductions: grid (ceil(C/32), any y,
// the launcher uses min(N, 65535)), block (32, 8) exactly: threadIdx.x picks the
// channel, blockIdx.y strides over the samples, the 8 thread rows stride over
// h*W + w and the block combines them in shared memory (deterministic).

#define COLS_X 32
#define COLS_Y 8

template <typename T>
__device__ __forceinline__ bool is_nan(T v) { return v != v; }

template <typename T>
__device__ __forceinline__ bool is_neg_inf(T v) { return v < T(0) && v * T(0.5) == v; }

// (n, i, j, c) of the flat index e of a row-major (N, A, B, C) array
struct At4 {
    long long n, i, j, c;
};
__device__ __forceinline__ At4 unravel4(long long e, long long A, long long B, long long C)
{
    At4 at;
    at.c = e % C;
    e /= C;
    at.j = e % B;
    e /= B;
    at.i = e % A;
    at.n = e / A;
    return at;
}

// Window rows holding padded row hp: i in [lo, hi], visited hi -> lo so that the
// window offset ki = hp - i*s ascends (the reference's order).
__device__ __forceinline__ void window_range(long long hp, long long K, long long s,
                                             long long nout, long long* lo, long long* hi)
{
    long long a = hp - K + 1;
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    long long b = hp / s;
    *hi = b < nout - 1 ? b : nout - 1;
}

template <typename T>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 long long N, long long H, long long W, long long C,
                                 long long KH, long long KW, long long sh, long long sw,
                                 long long ph, long long pw, long long Ho, long long Wo)
{
    const long long total = N * Ho * Wo * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const At4 at = unravel4(e, Ho, Wo, C);
        const long long n = at.n, i = at.i, j = at.j, c = at.c;
        bool found = false;
        T best = T(0);
        for (long long ki = 0; ki < KH; ++ki) {
            long long h = i * sh - ph + ki;
            if (h < 0 || h >= H) continue;
            for (long long kj = 0; kj < KW; ++kj) {
                long long w = j * sw - pw + kj;
                if (w < 0 || w >= W) continue;
                T v = x[((n * H + h) * W + w) * C + c];
                if (!found || v > best || is_nan(v)) {
                    if (!(found && is_nan(best))) best = v;  // NaN sticks
                    found = true;
                }
            }
        }
        y[e] = best;
    }
}

template <typename T>
__global__ void max_pool_backward(const T* __restrict__ dy, const T* __restrict__ x,
                                  const T* __restrict__ y, T* __restrict__ dx,
                                  long long N, long long H, long long W, long long C,
                                  long long KH, long long KW, long long sh, long long sw,
                                  long long ph, long long pw, long long Ho, long long Wo)
{
    const long long total = N * H * W * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const At4 at = unravel4(e, H, W, C);
        const long long n = at.n, h = at.i, w = at.j, c = at.c;
        const T xv = x[e];
        long long ilo, ihi, jlo, jhi;
        window_range(h + ph, KH, sh, Ho, &ilo, &ihi);
        window_range(w + pw, KW, sw, Wo, &jlo, &jhi);
        T acc = T(0);
        for (long long i = ihi; i >= ilo; --i) {
            const long long ki = h + ph - i * sh;
            for (long long j = jhi; j >= jlo; --j) {
                const long long kj = w + pw - j * sw;
                const long long o = ((n * Ho + i) * Wo + j) * C + c;
                const T yv = y[o];
                if (!(xv == yv)) continue;
                // Is (ki, kj) the first position of window (i, j) holding the maximum?
                bool first = true;
                for (long long a = 0; a <= ki && first; ++a) {
                    const long long hh = i * sh - ph + a;
                    const long long bend = a < ki ? KW : kj;
                    for (long long b = 0; b < bend; ++b) {
                        const long long ww = j * sw - pw + b;
                        bool equal;
                        if (hh < 0 || hh >= H || ww < 0 || ww >= W) equal = is_neg_inf(yv);
                        else equal = x[((n * H + hh) * W + ww) * C + c] == yv;
                        if (equal) { first = false; break; }
                    }
                }
                if (first) acc += dy[o];
            }
        }
        dx[e] = acc;
    }
}

template <typename T>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 long long N, long long H, long long W, long long C,
                                 long long KH, long long KW, long long sh, long long sw,
                                 long long ph, long long pw, long long Ho, long long Wo,
                                 T scale)
{
    const long long total = N * Ho * Wo * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const At4 at = unravel4(e, Ho, Wo, C);
        const long long n = at.n, i = at.i, j = at.j, c = at.c;
        T acc = T(0);
        for (long long ki = 0; ki < KH; ++ki) {
            long long h = i * sh - ph + ki;
            if (h < 0 || h >= H) continue;
            for (long long kj = 0; kj < KW; ++kj) {
                long long w = j * sw - pw + kj;
                if (w < 0 || w >= W) continue;
                acc += x[((n * H + h) * W + w) * C + c];
            }
        }
        y[e] = acc * scale;
    }
}

template <typename T>
__global__ void avg_pool_backward(const T* __restrict__ dy, T* __restrict__ dx,
                                  long long N, long long H, long long W, long long C,
                                  long long KH, long long KW, long long sh, long long sw,
                                  long long ph, long long pw, long long Ho, long long Wo,
                                  T scale)
{
    const long long total = N * H * W * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const At4 at = unravel4(e, H, W, C);
        const long long n = at.n, h = at.i, w = at.j, c = at.c;
        long long ilo, ihi, jlo, jhi;
        window_range(h + ph, KH, sh, Ho, &ilo, &ihi);
        window_range(w + pw, KW, sw, Wo, &jlo, &jhi);
        T acc = T(0);
        for (long long i = ihi; i >= ilo; --i)
            for (long long j = jhi; j >= jlo; --j)
                acc += dy[((n * Ho + i) * Wo + j) * C + c] * scale;
        dx[e] = acc;
    }
}

// ---------------------------------------------------------------- global pools

// Sum over h*W + w of x (or x^2) for sample n and channel c, combined over the 8
// thread rows of a (32, 8) block; the result is valid in thread row 0.
template <typename T, bool SQUARE>
__device__ double block_channel_sum(const T* __restrict__ x, long long HW, long long C,
                                    long long n, long long c)
{
    __shared__ double acc[COLS_Y][COLS_X + 1];
    double s = 0.0;
    if (c < C) {
        for (long long k = threadIdx.y; k < HW; k += COLS_Y) {
            double v = (double)x[(n * HW + k) * C + c];
            s += SQUARE ? v * v : v;
        }
    }
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    double t = 0.0;
    if (threadIdx.y == 0) {
        t = acc[0][threadIdx.x];
        for (int r = 1; r < COLS_Y; ++r) t += acc[r][threadIdx.x];
    }
    __syncthreads();  // acc is written again for the block's next sample
    return t;
}

template <typename T>
__global__ void global_avg_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                        long long N, long long HW, long long C)
{
    const long long c = blockIdx.x * (long long)COLS_X + threadIdx.x;
    for (long long n = blockIdx.y; n < N; n += gridDim.y) {
        double s = block_channel_sum<T, false>(x, HW, C, n, c);
        if (threadIdx.y == 0 && c < C) y[n * C + c] = (T)(s / (double)HW);
    }
}

template <typename T>
__global__ void global_rms_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                        long long N, long long HW, long long C, double eps)
{
    const long long c = blockIdx.x * (long long)COLS_X + threadIdx.x;
    for (long long n = blockIdx.y; n < N; n += gridDim.y) {
        double s = block_channel_sum<T, true>(x, HW, C, n, c);
        if (threadIdx.y == 0 && c < C) y[n * C + c] = (T)sqrt(s / (double)HW + eps);
    }
}

// (value, index) b replaces a as the running maximum: NaN beats numbers, and among
// equal values (or two NaNs) the smaller index wins, so the result is np.argmax's.
template <typename T>
__device__ __forceinline__ bool beats(T bv, long long bi, T av, long long ai)
{
    if (is_nan(av)) return is_nan(bv) && bi < ai;
    if (is_nan(bv)) return true;
    return bv > av || (bv == av && bi < ai);
}

template <typename T>
__global__ void global_max_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                        long long* __restrict__ index,
                                        long long N, long long HW, long long C)
{
    __shared__ T val[COLS_Y][COLS_X + 1];
    __shared__ long long idx[COLS_Y][COLS_X + 1];
    const long long c = blockIdx.x * (long long)COLS_X + threadIdx.x;
    for (long long n = blockIdx.y; n < N; n += gridDim.y) {
        T best = T(0);
        long long at = -1;  // -1: this thread row saw nothing (HW < 8)
        if (c < C) {
            for (long long k = threadIdx.y; k < HW; k += COLS_Y) {
                T v = x[(n * HW + k) * C + c];
                if (at < 0 || beats(v, k, best, at)) { best = v; at = k; }
            }
        }
        val[threadIdx.y][threadIdx.x] = best;
        idx[threadIdx.y][threadIdx.x] = at;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            for (int r = 1; r < COLS_Y; ++r) {
                long long k = idx[r][threadIdx.x];
                if (k >= 0 && beats(val[r][threadIdx.x], k, best, at)) {
                    best = val[r][threadIdx.x];
                    at = k;
                }
            }
            y[n * C + c] = best;
            index[n * C + c] = at;
        }
        __syncthreads();  // val/idx are written again for the next sample
    }
}

template <typename T>
__global__ void global_avg_pool_backward(const T* __restrict__ dy, T* __restrict__ dx,
                                         long long N, long long HW, long long C, T scale)
{
    const long long total = N * HW * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long c = e % C, n = e / (HW * C);
        dx[e] = dy[n * C + c] * scale;
    }
}

template <typename T>
__global__ void global_max_pool_backward(const T* __restrict__ dy,
                                         const long long* __restrict__ index,
                                         T* __restrict__ dx, long long N, long long HW,
                                         long long C)
{
    const long long total = N * HW * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long c = e % C;
        long long t = e / C;
        long long k = t % HW, n = t / HW;
        dx[e] = index[n * C + c] == k ? dy[n * C + c] : T(0);
    }
}

template <typename T>
__global__ void global_rms_pool_backward(const T* __restrict__ dy, const T* __restrict__ x,
                                         const T* __restrict__ y, T* __restrict__ dx,
                                         long long N, long long HW, long long C, T hw)
{
    const long long total = N * HW * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long c = e % C, n = e / (HW * C);
        T denom = y[n * C + c] * hw;
        T g = denom != T(0) ? dy[n * C + c] / denom : T(0);
        dx[e] = x[e] * g;
    }
}

// Instantiations, passed by kernels.load("pool") as name_expressions:
// @instantiate max_pool_forward<float>
// @instantiate max_pool_forward<double>
// @instantiate max_pool_backward<float>
// @instantiate max_pool_backward<double>
// @instantiate avg_pool_forward<float>
// @instantiate avg_pool_forward<double>
// @instantiate avg_pool_backward<float>
// @instantiate avg_pool_backward<double>
// @instantiate global_avg_pool_forward<float>
// @instantiate global_avg_pool_forward<double>
// @instantiate global_rms_pool_forward<float>
// @instantiate global_rms_pool_forward<double>
// @instantiate global_max_pool_forward<float>
// @instantiate global_max_pool_forward<double>
// @instantiate global_avg_pool_backward<float>
// @instantiate global_avg_pool_backward<double>
// @instantiate global_max_pool_backward<float>
// @instantiate global_max_pool_backward<double>
// @instantiate global_rms_pool_backward<float>
// @instantiate global_rms_pool_backward<double>
