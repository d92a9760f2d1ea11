// Kernels that are wrong on purpose: the emulator must report them, never hang.
// divergent_shuffle: half a warp shuffles with a full mask while the other half waits
//                    at __syncthreads: no thread can go on (a deadlock).
// shuffle_after_exit: lanes 16..31 return before a shuffle whose mask names them.
// trap_if_negative: __trap() on a negative element.

extern "C" __global__ void divergent_shuffle(float* x)
{
    float v = x[threadIdx.x];
    if (threadIdx.x < 16)
        v = __shfl_down_sync(0xffffffffu, v, 1);
    __syncthreads();
    x[threadIdx.x] = v;
}

extern "C" __global__ void shuffle_after_exit(float* x)
{
    if (threadIdx.x >= 16)
        return;
    x[threadIdx.x] = __shfl_sync(0xffffffffu, x[threadIdx.x], 0);
}

extern "C" __global__ void trap_if_negative(const float* x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] < 0.0f)
        __trap();
}
