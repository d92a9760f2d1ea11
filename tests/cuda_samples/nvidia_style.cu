// Kernels written the way NVIDIA's CUDA samples and common CUDA code write them, to
// check that foreign code compiles and runs on the emulator unchanged (the
// cooperative-groups versions are in cg/cg_style.cu):
// reduce6: the reduction sample's SharedMemory<T> (extern __shared__ inside a member
//          of a template struct), a template block size, a warp-shuffle tail;
// softmax_rows: the block-reduce idiom, `static __shared__` in a __device__ template
//               used twice per kernel (row max, then row sum), __shfl_xor_sync;
// fence_sum: threadFenceReduction: the last block to finish (atomicInc on a __device__
//            counter, __threadfence) adds the blocks' partial sums;
// chained_offsets: each block waits, on a volatile flag, for the block before it
//                  (a chained scan); reversed=1 waits for the block after it instead.
// @instantiate reduce6<float, 256, true>
// @instantiate reduce6<double, 128, false>
#define NEG_INF __int_as_float(0xff800000)  // NVRTC has neither INFINITY nor math_constants.h

template <class T>
struct SharedMemory {
    __device__ inline operator T *()
    {
        extern __shared__ int __smem[];
        return (T *)__smem;
    }
    __device__ inline operator const T *() const
    {
        extern __shared__ int __smem[];
        return (T *)__smem;
    }
};

template <>
struct SharedMemory<double> {
    __device__ inline operator double *()
    {
        extern __shared__ double __smem_d[];
        return (double *)__smem_d;
    }
    __device__ inline operator const double *() const
    {
        extern __shared__ double __smem_d[];
        return (double *)__smem_d;
    }
};

template <class T, unsigned int blockSize, bool nIsPow2>
__global__ void reduce6(const T *__restrict__ g_idata, T *__restrict__ g_odata, unsigned int n)
{
    T *sdata = SharedMemory<T>();
    unsigned int tid = threadIdx.x;
    unsigned int gridSize = blockSize * gridDim.x;
    T mySum = 0;
    if (nIsPow2) {
        unsigned int i = blockIdx.x * blockSize * 2 + threadIdx.x;
        gridSize = gridSize << 1;
        while (i < n) {
            mySum += g_idata[i];
            if ((i + blockSize) < n) mySum += g_idata[i + blockSize];
            i += gridSize;
        }
    } else {
        unsigned int i = blockIdx.x * blockSize + threadIdx.x;
        while (i < n) {
            mySum += g_idata[i];
            i += gridSize;
        }
    }
    sdata[tid] = mySum;
    __syncthreads();
    if ((blockSize >= 512) && (tid < 256)) sdata[tid] = mySum = mySum + sdata[tid + 256];
    __syncthreads();
    if ((blockSize >= 256) && (tid < 128)) sdata[tid] = mySum = mySum + sdata[tid + 128];
    __syncthreads();
    if ((blockSize >= 128) && (tid < 64)) sdata[tid] = mySum = mySum + sdata[tid + 64];
    __syncthreads();
    if (tid < 32) {
        if (blockSize >= 64) mySum += sdata[tid + 32];
        for (int offset = warpSize / 2; offset > 0; offset /= 2) mySum += __shfl_down_sync(0xffffffff, mySum, offset);
    }
    if (tid == 0) g_odata[blockIdx.x] = mySum;
}

template <typename T>
struct SumOp {
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
template <typename T>
struct MaxOp {
    __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

template <typename T, template <typename> class Op>
__device__ __forceinline__ T warpReduce(T val)
{
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1) val = Op<T>()(val, __shfl_xor_sync(0xffffffff, val, mask, 32));
    return val;
}

// Every thread gets the block's result. The buffer is a static __shared__ of the
// function, as in much CUDA code; the barrier at the end lets a second call reuse it.
template <typename T, template <typename> class Op>
__device__ __forceinline__ T blockReduce(T val, T identity)
{
    static __shared__ T shared[32];
    __shared__ T result;
    int lane = threadIdx.x & 0x1f;
    int wid = threadIdx.x >> 5;
    val = warpReduce<T, Op>(val);
    if (lane == 0) shared[wid] = val;
    __syncthreads();
    val = (threadIdx.x < (blockDim.x + 31) / 32) ? shared[lane] : identity;
    if (wid == 0) {
        val = warpReduce<T, Op>(val);
        if (lane == 0) result = val;
    }
    __syncthreads();
    return result;
}

extern "C" __global__ void softmax_rows(const float *x, float *y, int cols)
{
    const float *row = x + (size_t)blockIdx.x * cols;
    float m = NEG_INF;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, row[c]);
    m = blockReduce<float, MaxOp>(m, NEG_INF);
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += __expf(row[c] - m);
    s = blockReduce<float, SumOp>(s, 0.f);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) y[(size_t)blockIdx.x * cols + c] = __expf(row[c] - m) / s;
}

__device__ unsigned int retirementCount = 0;

extern "C" __global__ void fence_sum(const float *in, float *partial, float *out, unsigned int n)
{
    __shared__ bool amLast;
    float v = 0.f;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) v += in[i];
    v = blockReduce<float, SumOp>(v, 0.f);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = v;
        __threadfence();
        unsigned int ticket = atomicInc(&retirementCount, gridDim.x);
        amLast = (ticket == gridDim.x - 1);
    }
    __syncthreads();
    if (amLast) {
        float s = 0.f;
        for (unsigned int b = threadIdx.x; b < gridDim.x; b += blockDim.x) s += ((volatile float *)partial)[b];
        s = blockReduce<float, SumOp>(s, 0.f);
        if (threadIdx.x == 0) {
            out[0] = s;
            retirementCount = 0;
        }
    }
}

extern "C" __global__ void chained_offsets(const int *counts, int *offsets, int *flags, int reversed)
{
    int b = blockIdx.x;
    int before = reversed ? b + 1 : b - 1;
    if (threadIdx.x == 0) {
        int base = 0;
        if (before >= 0 && before < (int)gridDim.x) {
            volatile int *flag = &flags[before];
            while (*flag == 0) {
            }
            base = ((volatile int *)offsets)[before] + counts[before];
        }
        offsets[b] = base;
        __threadfence();
        ((volatile int *)flags)[b] = 1;
    }
}
