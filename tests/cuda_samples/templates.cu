// Templates instantiated through name_expressions ("axpy<float>", "block_sum<double, 128>").
// axpy: y = a * x + y, grid-stride. block_sum: out[block] = sum of its BLOCK elements.
// @instantiate axpy<float>
// @instantiate axpy<double>
// @instantiate block_sum<float, 128>
// @instantiate block_sum<double, 128>

template <typename T>
__global__ void axpy(T a, const T* __restrict__ x, T* __restrict__ y, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = a * x[i] + y[i];
}

template <typename T, int BLOCK>
__global__ void block_sum(const T* x, T* out, int n)
{
    __shared__ T s[BLOCK];
    int i = blockIdx.x * BLOCK + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : T(0);
    __syncthreads();
    for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride)
            s[threadIdx.x] += s[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = s[0];
}
