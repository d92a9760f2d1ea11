// halo.cu: pack and unpack a rectangular slab of a channels-last tensor, for halo
// exchanges of spatially split feature maps.
//
// Layouts (row-major): x (N, H, W, C); buf (N, r1 - r0, c1 - c0, C) contiguous.
// The slab is rows r0:r1 and columns c0:c1 of every sample, all channels
// (0 <= r0 <= r1 <= H, 0 <= c0 <= c1 <= W; the launcher checks). T is float or
// double (name_expressions halo_pack<float>, ...). Reference: mpicnn/ops/halo.py.
//
//   halo_pack     buf[n, i, j, c]  = x[n, r0 + i, c0 + j, c]
//   halo_unpack   x[n, r0 + i, c0 + j, c]  = buf[n, i, j, c]     (accumulate == 0)
//                 x[n, r0 + i, c0 + j, c] += buf[n, i, j, c]     (accumulate != 0:
//                 the backward of a halo exchange adds ghost gradients to their owner)
//
// Launch: 1-D grid-stride over the slab's elements; any grid and block. Consecutive
// threads move consecutive channels (runs of (c1 - c0) * C contiguous values).

template <typename T>
__global__ void halo_pack(const T* __restrict__ x, T* __restrict__ buf, long long N,
                          long long H, long long W, long long C, long long r0, long long r1,
                          long long c0, long long c1)
{
    const long long rows = r1 - r0, run = (c1 - c0) * C;
    const long long total = N * rows * run;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long k = e % run;
        const long long t = e / run;
        const long long i = t % rows, n = t / rows;
        buf[e] = x[((n * H + r0 + i) * W + c0) * C + k];
    }
}

template <typename T>
__global__ void halo_unpack(const T* __restrict__ buf, T* __restrict__ x, long long N,
                            long long H, long long W, long long C, long long r0, long long r1,
                            long long c0, long long c1, int accumulate)
{
    const long long rows = r1 - r0, run = (c1 - c0) * C;
    const long long total = N * rows * run;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long k = e % run;
        const long long t = e / run;
        const long long i = t % rows, n = t / rows;
        T* dst = x + ((n * H + r0 + i) * W + c0) * C + k;
        *dst = accumulate ? *dst + buf[e] : buf[e];
    }
}

// Instantiations, passed by kernels.load("halo") as name_expressions:
// @instantiate halo_pack<float>
// @instantiate halo_pack<double>
// @instantiate halo_unpack<float>
// @instantiate halo_unpack<double>
