// norm.cu: batch normalisation over every axis but the last (channels-last).
//
// Layout: x, y, xhat, dy, dx are (rows, C) row-major (rows = N*H*W for NHWC input);
// per-channel vectors are (C,). T is float or double (name_expressions
// bn_normalize<float>, ...). Reference: mpicnn/ops/norm.py.
//
// The statistics are sums, so the ranks that share a BatchNorm can add them up
// between the kernels (the launcher copies the small (C,) vectors to the host for MPI):
//
//   bn_sum_partial     partial[p, c]     = sum_r x[r, c]                 (double)
//   bn_sqdev_partial   partial[p, c]     = sum_r d*d, d = x[r, c] - mean[c] rounded
//                                          to T first, squared in double (as NumPy)
//   bn_grad_partial    partial[p, c]     = sum_r dy[r, c]
//                      partial[p, C + c] = sum_r dy[r, c] * xhat[r, c]   (double)
//   bn_finish          out[k] = sum_p partial[p, k]   (k < width; any 1-D launch)
//   bn_normalize       xhat = (x - mean) * invstd;  y = xhat * weight + bias   (in T)
//   bn_backward_train  dx = ((dy - xhat * a) - b) * g,  a = T(dw/count),
//                      b = T(db/count), g = T(invstd * weight)
//   bn_backward_eval   dx = dy * g
//
// (the elementwise ones round every step in T in the reference's order, so on the
// emulator and with --fmad=false they give NumPy's bits).
//
// Launch: *_partial: grid (ceil(C/32), P), block (32, 8) exactly; threadIdx.x picks
// the channel (coalesced), the P*8 thread rows stride over rows, a block adds its 8
// rows in shared memory: a deterministic two-stage reduction with bn_finish.
// Elementwise kernels: 1-D grid-stride, any launch shape.

#define COLS_X 32
#define COLS_Y 8

// Adds the 8 thread rows' values s of a (32, 8) block; the result is valid in row 0.
__device__ __forceinline__ double block_rows_sum(double s, double (*acc)[COLS_X + 1])
{
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    double t = 0.0;
    if (threadIdx.y == 0) {
        t = acc[0][threadIdx.x];
        for (int r = 1; r < COLS_Y; ++r) t += acc[r][threadIdx.x];
    }
    __syncthreads();  // acc may be reused by the caller
    return t;
}

template <typename T>
__global__ void bn_sum_partial(const T* __restrict__ x, double* __restrict__ partial,
                               long long rows, long long C)
{
    __shared__ double acc[COLS_Y][COLS_X + 1];
    const long long c = blockIdx.x * (long long)COLS_X + threadIdx.x;
    double s = 0.0;
    if (c < C)
        for (long long r = blockIdx.y * (long long)COLS_Y + threadIdx.y; r < rows;
             r += (long long)gridDim.y * COLS_Y)
            s += (double)x[r * C + c];
    s = block_rows_sum(s, acc);
    if (threadIdx.y == 0 && c < C) partial[blockIdx.y * C + c] = s;
}

template <typename T>
__global__ void bn_sqdev_partial(const T* __restrict__ x, const T* __restrict__ mean,
                                 double* __restrict__ partial, long long rows, long long C)
{
    __shared__ double acc[COLS_Y][COLS_X + 1];
    const long long c = blockIdx.x * (long long)COLS_X + threadIdx.x;
    double s = 0.0;
    if (c < C) {
        const T m = mean[c];
        for (long long r = blockIdx.y * (long long)COLS_Y + threadIdx.y; r < rows;
             r += (long long)gridDim.y * COLS_Y) {
            double d = (double)(x[r * C + c] - m);
            s += d * d;
        }
    }
    s = block_rows_sum(s, acc);
    if (threadIdx.y == 0 && c < C) partial[blockIdx.y * C + c] = s;
}

template <typename T>
__global__ void bn_grad_partial(const T* __restrict__ dy, const T* __restrict__ xhat,
                                double* __restrict__ partial, long long rows, long long C)
{
    __shared__ double acc[COLS_Y][COLS_X + 1];
    const long long c = blockIdx.x * (long long)COLS_X + threadIdx.x;
    double s = 0.0, sx = 0.0;
    if (c < C)
        for (long long r = blockIdx.y * (long long)COLS_Y + threadIdx.y; r < rows;
             r += (long long)gridDim.y * COLS_Y) {
            double g = (double)dy[r * C + c];
            s += g;
            sx += g * (double)xhat[r * C + c];
        }
    s = block_rows_sum(s, acc);
    sx = block_rows_sum(sx, acc);
    if (threadIdx.y == 0 && c < C) {
        partial[blockIdx.y * 2 * C + c] = s;
        partial[blockIdx.y * 2 * C + C + c] = sx;
    }
}

extern "C" __global__ void bn_finish(const double* __restrict__ partial, double* __restrict__ out,
                          long long P, long long width)
{
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < width;
         k += (long long)gridDim.x * blockDim.x) {
        double t = 0.0;
        for (long long p = 0; p < P; ++p) t += partial[p * width + k];
        out[k] = t;
    }
}

template <typename T>
__global__ void bn_normalize(const T* __restrict__ x, const T* __restrict__ mean,
                             const T* __restrict__ invstd, const T* __restrict__ weight,
                             const T* __restrict__ bias, T* __restrict__ xhat,
                             T* __restrict__ y, long long rows, long long C)
{
    const long long n = rows * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long c = i % C;
        T h = (x[i] - mean[c]) * invstd[c];
        xhat[i] = h;
        y[i] = h * weight[c] + bias[c];
    }
}

template <typename T>
__global__ void bn_backward_train(const T* __restrict__ dy, const T* __restrict__ xhat,
                                  const T* __restrict__ a, const T* __restrict__ b,
                                  const T* __restrict__ g, T* __restrict__ dx,
                                  long long rows, long long C)
{
    const long long n = rows * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long c = i % C;
        T t = xhat[i] * a[c];
        t = dy[i] - t;
        t = t - b[c];
        dx[i] = t * g[c];
    }
}

template <typename T>
__global__ void bn_backward_eval(const T* __restrict__ dy, const T* __restrict__ g,
                                 T* __restrict__ dx, long long rows, long long C)
{
    const long long n = rows * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        dx[i] = dy[i] * g[i % C];
}

// Instantiations, passed by kernels.load("norm") as name_expressions:
// @instantiate bn_sum_partial<float>
// @instantiate bn_sum_partial<double>
// @instantiate bn_sqdev_partial<float>
// @instantiate bn_sqdev_partial<double>
// @instantiate bn_grad_partial<float>
// @instantiate bn_grad_partial<double>
// @instantiate bn_normalize<float>
// @instantiate bn_normalize<double>
// @instantiate bn_backward_train<float>
// @instantiate bn_backward_train<double>
// @instantiate bn_backward_eval<float>
// @instantiate bn_backward_eval<double>
