// halo3d.cu: pack and unpack a box of channels-first volumes, for the three-phase halo
// exchanges of volumes split over depth x height x width (mpicnn/parallel/halo3d.py).
//
// Layouts (row-major): x (NC, D, H, W) (NC = N * C); buf (NC, d1 - d0, h1 - h0, w1 - w0)
// contiguous. The box is depths d0:d1, rows h0:h1 and columns w0:w1 of every sample and
// channel (0 <= start <= stop <= size on each axis; the launcher checks). T is float or
// double (name_expressions halo3d_pack<float>, ...). Reference: mpicnn/ops/halo3d.py.
//
//   halo3d_pack     buf[m, i, j, k] = x[m, d0 + i, h0 + j, w0 + k]
//   halo3d_unpack   x[m, d0 + i, h0 + j, w0 + k]  = buf[m, i, j, k]   (accumulate == 0)
//                   x[m, d0 + i, h0 + j, w0 + k] += buf[m, i, j, k]   (accumulate != 0: the
//                   adjoint of an exchange adds ghost gradients to their owner)
//
// Launch: 1-D grid-stride over the box's elements; any grid and block. Consecutive
// threads move consecutive columns.

template <typename T>
__global__ void halo3d_pack(const T* __restrict__ x, T* __restrict__ buf, long long NC,
                            long long D, long long H, long long W, long long d0, long long d1,
                            long long h0, long long h1, long long w0, long long w1)
{
    const long long bd = d1 - d0, bh = h1 - h0, bw = w1 - w0;
    const long long total = NC * bd * bh * bw;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = e;
        const long long k = r % bw;
        r /= bw;
        const long long j = r % bh;
        r /= bh;
        const long long i = r % bd, m = r / bd;
        buf[e] = x[((m * D + d0 + i) * H + h0 + j) * W + w0 + k];
    }
}

template <typename T>
__global__ void halo3d_unpack(const T* __restrict__ buf, T* __restrict__ x, long long NC,
                              long long D, long long H, long long W, long long d0, long long d1,
                              long long h0, long long h1, long long w0, long long w1, int accumulate)
{
    const long long bd = d1 - d0, bh = h1 - h0, bw = w1 - w0;
    const long long total = NC * bd * bh * bw;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = e;
        const long long k = r % bw;
        r /= bw;
        const long long j = r % bh;
        r /= bh;
        const long long i = r % bd, m = r / bd;
        T* dst = x + ((m * D + d0 + i) * H + h0 + j) * W + w0 + k;
        *dst = accumulate ? *dst + buf[e] : buf[e];
    }
}

// Instantiations, passed by kernels.load("halo3d") as name_expressions:
// @instantiate halo3d_pack<float>
// @instantiate halo3d_pack<double>
// @instantiate halo3d_unpack<float>
// @instantiate halo3d_unpack<double>
