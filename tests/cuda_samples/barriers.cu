// Barrier patterns.
// shift_left: y[i] = x[i + 1] within each block (the block's last element keeps its
//             own value). Threads past n return before the barrier: exited threads
//             count as arrived on Volta and later GPUs, so it works, but synccheck
//             reports it (the CUDA guide wants every thread to reach a barrier).
//             blockDim.x <= 256.
// count_above: per block, how many x > threshold (__syncthreads_count), whether all
//             in-range elements are (__syncthreads_and) and whether any is (_or).
// scale_gridstride: x *= a with a grid smaller than n.

extern "C" __global__ void shift_left(const float* x, float* y, int n)
{
    __shared__ float tile[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    tile[threadIdx.x] = x[i];
    __syncthreads();
    int last = min((int)blockDim.x, n - (int)(blockIdx.x * blockDim.x)) - 1;
    y[i] = (int)threadIdx.x < last ? tile[threadIdx.x + 1] : tile[threadIdx.x];
}

extern "C" __global__ void count_above(const float* x, int n, float threshold, int* counts,
                                       int* all_above, int* any_above)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int above = i < n && x[i] > threshold;
    int count = __syncthreads_count(above);
    int all = __syncthreads_and(i < n ? above : 1);
    int any = __syncthreads_or(above);
    if (threadIdx.x == 0) {
        counts[blockIdx.x] = count;
        all_above[blockIdx.x] = all;
        any_above[blockIdx.x] = any;
    }
}

extern "C" __global__ void scale_gridstride(float* x, float a, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        x[i] *= a;
}
