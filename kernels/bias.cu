// bias.cu: per-channel bias add and the bias gradient (a column sum).
//
// Layout: y and dy are channels-last, seen as a (rows, C) row-major matrix
// (rows = N*H*W for NHWC activations, N for (N, C) ones); b and db are (C,).
// T is float or double (name_expressions bias_add<float>, ...).
//
//   bias_add             y[r, c] += b[c]                          in place
//   bias_grad_partial    partial[p, c] = sum over the rows of block row p of dy[r, c]
//   bias_grad_finish     db[c] = T(sum_p partial[p, c])
//
// The gradient is a two-stage, deterministic reduction accumulated in double:
// stage 1 runs a grid (ceil(C/32), P) of (32, 8) blocks: threadIdx.x picks the channel
// (consecutive threads read consecutive channels: coalesced), the P*8 thread rows
// stride over the rows, and each block sums its 8 thread rows in shared memory into
// partial (P, C) double. Stage 2 (any 1-D launch) sums the P partials of a channel in
// order. The same (P, block) always gives the same bits.
//
// bias_add: 1-D grid-stride over rows*C elements, any launch shape.

#define COLS_X 32  // channels per block (blockDim.x must be 32)
#define COLS_Y 8   // thread rows per block (blockDim.y must be 8)

template <typename T>
__global__ void bias_add(T* __restrict__ y, const T* __restrict__ b, long long rows, long long C)
{
    long long n = rows * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] += b[i % C];
    }
}

template <typename T>
__global__ void bias_grad_partial(const T* __restrict__ dy, double* __restrict__ partial,
                                  long long rows, long long C)
{
    __shared__ double acc[COLS_Y][COLS_X + 1];
    long long c = blockIdx.x * (long long)COLS_X + threadIdx.x;
    double s = 0.0;
    if (c < C) {
        for (long long r = blockIdx.y * (long long)COLS_Y + threadIdx.y; r < rows;
             r += (long long)gridDim.y * COLS_Y) {
            s += (double)dy[r * C + c];
        }
    }
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        double t = acc[0][threadIdx.x];
        for (int k = 1; k < COLS_Y; ++k) t += acc[k][threadIdx.x];
        partial[blockIdx.y * C + c] = t;
    }
}

template <typename T>
__global__ void bias_grad_finish(const double* __restrict__ partial, T* __restrict__ db,
                                 long long P, long long C)
{
    for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < C;
         c += (long long)gridDim.x * blockDim.x) {
        double t = 0.0;
        for (long long p = 0; p < P; ++p) t += partial[p * C + c];
        db[c] = (T)t;
    }
}

// Instantiations, passed by kernels.load("bias") as name_expressions:
// @instantiate bias_add<float>
// @instantiate bias_add<double>
// @instantiate bias_grad_partial<float>
// @instantiate bias_grad_partial<double>
// @instantiate bias_grad_finish<float>
// @instantiate bias_grad_finish<double>
