// Atomics in shared and global memory.
// histogram: bins equal-width bins over [lo, hi) (values outside go to the end bins);
//            per-block float counts in shared memory, merged into hist with atomicAdd.
// max_reduce: *out = max(*out, max(x)) with a float max built on atomicCAS.
// int_atomics: min, max, count and sum of the low bytes of x.

#define MAX_BINS 64

extern "C" __global__ void histogram(const float* x, int n, float lo, float hi, float* hist, int bins)
{
    __shared__ float local[MAX_BINS];
    for (int b = threadIdx.x; b < bins; b += blockDim.x)
        local[b] = 0.0f;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        int b = (int)((x[i] - lo) / (hi - lo) * bins);
        b = min(max(b, 0), bins - 1);
        atomicAdd(&local[b], 1.0f);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < bins; b += blockDim.x)
        atomicAdd(&hist[b], local[b]);
}

__device__ float atomic_max_float(float* address, float value)
{
    int* p = (int*)address;
    int old = *p, assumed;
    do {
        assumed = old;
        old = atomicCAS(p, assumed, __float_as_int(fmaxf(value, __int_as_float(assumed))));
    } while (assumed != old);
    return __int_as_float(old);
}

extern "C" __global__ void max_reduce(const float* x, int n, float* out)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        atomic_max_float(out, x[i]);
}

extern "C" __global__ void int_atomics(const int* x, int n, int* lo, int* hi, unsigned int* count,
                                       unsigned long long* low_byte_sum)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicMin(lo, x[i]);
        atomicMax(hi, x[i]);
        atomicAdd(count, 1u);
        atomicAdd(low_byte_sum, (unsigned long long)(x[i] & 0xff));
    }
}
