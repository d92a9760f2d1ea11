// dropout.cu: the dropout scale mask from a counter-based hash (splitmix64).
//
// Bit for bit the mask of mpicnn/ops/dropout.py (read its docstring): the keep
// decision of one element depends only on (layer seed, step, GLOBAL sample index,
// NCHW element index, p), so every backend, layout and batch split agrees.
//
//   k_step    = mix64(seed + GOLDEN * (step + 1))         computed by the launcher
//   k_sample  = mix64(k_step + GOLDEN * (sample_offset + n + 1))
//   r         = mix64(k_sample + GOLDEN * (e + 1))
//   mask      = (r >> 11) >= threshold ? scale : 0        threshold = floor(p * 2^53)
//
// all in unsigned 64-bit arithmetic (wraps modulo 2^64, like the NumPy uint64 code).
// Layout: mask is (N, per_sample) row-major, per_sample = H*W*C. With nhwc != 0 the
// sample is (H, W, C) and the element index is the NCHW one, e = (c*H + h)*W + w;
// otherwise e is the flat index within the sample (NCHW 4-D, (N, F) and other ranks).
// T is float or double (name_expressions dropout_mask<float>, <double>).
//
// Launch: 1-D grid-stride over N * per_sample elements; any grid and block.

#define GOLDEN 0x9E3779B97F4A7C15ULL

__device__ __forceinline__ unsigned long long mix64(unsigned long long z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

template <typename T>
__global__ void dropout_mask(T* __restrict__ mask, long long N, long long per_sample,
                             long long H, long long W, long long C, int nhwc,
                             unsigned long long k_step, unsigned long long sample_offset,
                             unsigned long long threshold, T scale)
{
    const long long total = N * per_sample;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long n = i / per_sample;
        long long e = i % per_sample;
        if (nhwc) {
            const long long c = e % C;
            const long long hw = e / C;
            e = (c * H + hw / W) * W + hw % W;
        }
        unsigned long long k_sample =
            mix64(k_step + GOLDEN * (sample_offset + (unsigned long long)n + 1ULL));
        unsigned long long r = mix64(k_sample + GOLDEN * ((unsigned long long)e + 1ULL));
        mask[i] = (r >> 11) >= threshold ? scale : T(0);
    }
}

// Instantiations, passed by kernels.load("dropout") as name_expressions:
// @instantiate dropout_mask<float>
// @instantiate dropout_mask<double>
