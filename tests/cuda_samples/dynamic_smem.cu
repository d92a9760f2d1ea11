// Dynamic shared memory (extern __shared__, sized by the launch's shared_mem).
// reverse_blocks: y = x with each block's chunk reversed; needs blockDim.x floats.
// block_sum_double: out[block] = sum of its chunk, tree reduction in a byte buffer
//                   viewed as double; needs blockDim.x doubles, blockDim.x a power of 2.
// peek_shared: copies shared memory to out without writing it first (poison check).

extern "C" __global__ void reverse_blocks(const float* x, float* y)
{
    extern __shared__ float buf[];
    int base = blockIdx.x * blockDim.x;
    buf[threadIdx.x] = x[base + threadIdx.x];
    __syncthreads();
    y[base + threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void block_sum_double(const double* x, double* out, int n)
{
    extern __shared__ __align__(16) unsigned char smem[];
    double* s = reinterpret_cast<double*>(smem);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : 0.0;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride)
            s[threadIdx.x] += s[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = s[0];
}

extern "C" __global__ void peek_shared(float* out)
{
    extern __shared__ float untouched[];
    out[blockIdx.x * blockDim.x + threadIdx.x] = untouched[threadIdx.x];
}
