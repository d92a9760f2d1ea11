// Elementwise kernels and a portable use of inline PTX.
// relu: y = max(x, 0). lane_ids: each thread's lane, from the %laneid register on a
// GPU and from threadIdx elsewhere (the emulator does not define __CUDA_ARCH__).

extern "C" __global__ void relu(const float* x, float* y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = fmaxf(x[i], 0.0f);
}

__device__ unsigned int lane_id()
{
#ifdef __CUDA_ARCH__
    unsigned int lane;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
    return lane;
#else
    return threadIdx.x % 32;
#endif
}

extern "C" __global__ void lane_ids(unsigned int* out)
{
    out[blockIdx.x * blockDim.x + threadIdx.x] = lane_id();
}
