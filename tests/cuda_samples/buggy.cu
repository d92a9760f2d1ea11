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

// Races for racecheck (the lines above are named by the tests: new kernels go below).
// rotate: writes a tile and reads a neighbour's element with no barrier between
//         (synced=1 puts __syncthreads() there; the second barrier guards the reuse).
// block_total: every thread adds into one __shared__ float between two barriers.
// lane_swap: lanes of one warp exchange through shared memory, __syncwarp() between
//            the write and the read when synced=1.
extern "C" __global__ void rotate(float* x, int synced)
{
    __shared__ float tile[256];
    tile[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    if (synced) __syncthreads();
    float v = tile[(threadIdx.x + 1) % blockDim.x];
    if (synced) __syncthreads();
    x[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

extern "C" __global__ void block_total(const float* x, float* total)
{
    __shared__ float sum;
    if (threadIdx.x == 0) sum = 0.0f;
    __syncthreads();
    sum += x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) *total = sum;
}

extern "C" __global__ void lane_swap(int* x, int synced)
{
    __shared__ int lanes[32];
    lanes[threadIdx.x] = x[threadIdx.x];
    if (synced) __syncwarp();
    x[threadIdx.x] = lanes[threadIdx.x ^ 1];
}
