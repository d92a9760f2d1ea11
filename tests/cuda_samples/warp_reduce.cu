// Warp-level primitives: reductions with each kind of shuffle, votes, and a grid sum
// built from them. Warp kernels expect n to be a multiple of 32 and an exact grid.
#define FULL_MASK 0xffffffffu

__device__ float warp_sum_down(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_down_sync(FULL_MASK, v, offset);
    return v;  // complete in lane 0
}

__device__ float warp_sum_xor(float v)
{
    for (int mask = 16; mask > 0; mask >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, mask);
    return v;  // complete in every lane
}

// Per warp: sum (down, lane 0), sum (xor, lane 5), inclusive scan (up), and the value
// of lane 31 - warp % 32 broadcast to all lanes (idx).
extern "C" __global__ void warp_ops(const float* x, float* down_sum, float* xor_sum,
                                    float* scan, float* bcast)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x % 32;
    int warp = i / 32;
    float v = x[i];

    float d = warp_sum_down(v);
    if (lane == 0) down_sum[warp] = d;

    float s = warp_sum_xor(v);
    if (lane == 5) xor_sum[warp] = s;

    float p = v;
    for (int offset = 1; offset < 32; offset <<= 1) {
        float t = __shfl_up_sync(FULL_MASK, p, offset);
        if (lane >= offset) p += t;
    }
    scan[i] = p;

    bcast[i] = __shfl_sync(FULL_MASK, v, 31 - warp % 32);
}

// Sums of groups of 8 lanes (shuffle width 8), written by every lane.
extern "C" __global__ void segment_sum8(const double* x, double* out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    double v = x[i];
    for (int mask = 4; mask > 0; mask >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, mask, 8);
    out[i] = v;
}

// Per warp: the ballot of flags, whether any / all are set, and how many.
extern "C" __global__ void votes(const int* flags, unsigned int* ballots, int* anys, int* alls,
                                 int* counts)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int warp = i / 32;
    int f = flags[i];
    unsigned int b = __ballot_sync(FULL_MASK, f);
    int any = __any_sync(FULL_MASK, f);
    int all = __all_sync(FULL_MASK, f);
    if (threadIdx.x % 32 == 0) {
        ballots[warp] = b;
        anys[warp] = any;
        alls[warp] = all;
        counts[warp] = __popc(b);
    }
}

// total += sum(x): grid-stride loads, warp shuffles, warp partials in shared memory,
// one atomicAdd per block. Any grid; blockDim.x a multiple of 32.
extern "C" __global__ void sum_reduce(const float* x, float* total, int n)
{
    __shared__ float partial[32];
    float v = 0.0f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        v += x[i];
    v = warp_sum_down(v);
    int lane = threadIdx.x % 32;
    int wid = threadIdx.x / 32;
    if (lane == 0) partial[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = lane < blockDim.x / 32 ? partial[lane] : 0.0f;
        v = warp_sum_down(v);
        if (lane == 0) atomicAdd(total, v);
    }
}
