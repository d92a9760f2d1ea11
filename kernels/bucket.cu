// bucket.cu: gradient-bucket flatten and unflatten in one launch for many tensors.
//
// A bucket is one flat buffer holding `count` tensors back to back. The tensors are
// given by a pointer table: ptrs[t] is the address of tensor t (device memory on
// the GPU, host memory on the emulator) and offsets (count + 1,) int64 its first
// element in flat, ascending, offsets[0] = 0, offsets[count] = total. Every tensor
// is contiguous, of T (float or double; name_expressions bucket_flatten<float>, ...).
// Reference: mpicnn/ops/bucket.py.
//
//   bucket_flatten     flat[offsets[t] + k] = tensor_t[k]
//   bucket_unflatten   tensor_t[k] = flat[offsets[t] + k]
//
// Launch: 1-D grid-stride over the total elements; each thread finds its tensor by
// binary search in offsets (log2(count) steps), so the work is balanced however the
// tensor sizes differ. Any grid and block.

__device__ __forceinline__ long long tensor_of(const long long* __restrict__ offsets,
                                              long long count, long long e)
{
    long long lo = 0, hi = count - 1;  // the last t with offsets[t] <= e
    while (lo < hi) {
        long long mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= e) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

template <typename T>
__global__ void bucket_flatten(const unsigned long long* __restrict__ ptrs,
                               const long long* __restrict__ offsets, long long count,
                               T* __restrict__ flat, long long total)
{
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long t = tensor_of(offsets, count, e);
        const T* src = (const T*)ptrs[t];
        flat[e] = src[e - offsets[t]];
    }
}

template <typename T>
__global__ void bucket_unflatten(const T* __restrict__ flat,
                                 const unsigned long long* __restrict__ ptrs,
                                 const long long* __restrict__ offsets, long long count,
                                 long long total)
{
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long t = tensor_of(offsets, count, e);
        T* dst = (T*)ptrs[t];
        dst[e - offsets[t]] = flat[e];
    }
}

// Instantiations, passed by kernels.load("bucket") as name_expressions:
// @instantiate bucket_flatten<float>
// @instantiate bucket_flatten<double>
// @instantiate bucket_unflatten<float>
// @instantiate bucket_unflatten<double>
