// concat.cu: concatenate two arrays along one axis (a U-Net skip's channels) and split
// the gradient back.
//
// Every array is viewed as (outer, channels, inner) row-major: for NCDHW volumes
// outer = N, inner = D*H*W; for NHWC images outer = N*H*W, inner = 1. T is float or
// double (name_expressions concat_channels<float>, ...). Reference: mpicnn/ops/concat.py.
//
//   concat_channels  out (outer, ca + cb, inner) = [a (outer, ca, inner), b (outer, cb, inner)]
//   split_channels   da = d[:, :ca], db = d[:, ca:]   (d (outer, ca + cb, inner))
//
// Launch: 1-D grid-stride over out's (d's) elements; any grid and block.

template <typename T>
__global__ void concat_channels(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                                long long outer, long long ca, long long cb, long long inner)
{
    const long long c = ca + cb;
    const long long total = outer * c * inner;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long i = e % inner;
        const long long t = e / inner;
        const long long k = t % c, o = t / c;
        out[e] = k < ca ? a[(o * ca + k) * inner + i] : b[(o * cb + k - ca) * inner + i];
    }
}

template <typename T>
__global__ void split_channels(const T* __restrict__ d, T* __restrict__ da, T* __restrict__ db,
                               long long outer, long long ca, long long cb, long long inner)
{
    const long long c = ca + cb;
    const long long total = outer * c * inner;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long i = e % inner;
        const long long t = e / inner;
        const long long k = t % c, o = t / c;
        if (k < ca) da[(o * ca + k) * inner + i] = d[e];
        else db[(o * cb + k - ca) * inner + i] = d[e];
    }
}

// Instantiations, passed by kernels.load("concat") as name_expressions:
// @instantiate concat_channels<float>
// @instantiate concat_channels<double>
// @instantiate split_channels<float>
// @instantiate split_channels<double>
