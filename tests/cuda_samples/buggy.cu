// Kernels with the bugs compute-sanitizer finds on a GPU; under MPICNN_EMU_CHECK the
// emulator must report each as a LaunchError (tests/test_emulator_check.py).
// fill_ramp: x[i] = a * i with no bounds check: threads past the end of x write past it.
// shift_read: y[i] = x[i + 1] reads one element past the end of x.
// tile_reverse: a 32-float static tile indexed by threadIdx.x: a block of more than
//               32 threads writes past it.
// window_sum: a dynamic shared window of blockDim.x + 2 floats (shared_mem must hold
//             them); reading it at threadIdx.x + 2 is fine, a launch with too little
//             shared_mem is not.
// half_barrier: __syncthreads() inside a branch only half of the block takes.
// two_barriers: the two halves of a block wait at different __syncthreads().

extern "C" __global__ void fill_ramp(float* x, float a)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    x[i] = a * i;
}

extern "C" __global__ void shift_read(const float* x, float* y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = x[i + 1];
}

extern "C" __global__ void tile_reverse(float* x)
{
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    x[threadIdx.x] = tile[31 - threadIdx.x % 32];
}

extern "C" __global__ void window_sum(const float* x, float* y, int n)
{
    extern __shared__ float window[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    window[threadIdx.x] = i < n ? x[i] : 0.0f;
    if (threadIdx.x < 2)
        window[blockDim.x + threadIdx.x] = i + blockDim.x < n ? x[i + blockDim.x] : 0.0f;
    __syncthreads();
    if (i < n)
        y[i] = window[threadIdx.x] + window[threadIdx.x + 1] + window[threadIdx.x + 2];
}

extern "C" __global__ void half_barrier(float* x)
{
    if (threadIdx.x < blockDim.x / 2) {
        x[threadIdx.x] += 1.0f;
        __syncthreads();
    }
    x[threadIdx.x] *= 2.0f;
}

extern "C" __global__ void two_barriers(float* x)
{
    if (threadIdx.x % 2 == 0) {
        x[threadIdx.x] = 1.0f;
        __syncthreads();
    } else {
        x[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}
