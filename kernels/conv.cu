// conv.cu: im2col and col2im for 2-D convolution on channels-last (NHWC) arrays.
//
// The convolution itself is a GEMM on the columns these kernels build: cupy.matmul
// (cuBLAS) on the GPU, numpy.matmul on the emulator path (mpicnn/ops/cuda/conv.py).
// Reference: mpicnn/ops/conv.py (same geometry, PyTorch semantics, floor mode).
//
// Layouts (row-major):
//   x     (N, H, W, C)               input, NHWC; C = G * Cg
//   cols  (G, N*Ho*Wo, KH*KW*Cg)     one row per output pixel (n, i, j); columns in
//                                    (ki, kj, c) order, matching the weight matrix
//                                    w (O, Cg, KH, KW) -> (G, KH*KW*Cg, O/G)
//   dx    (N, H, W, C)               col2im output
//
//   cols[g, (n*Ho + i)*Wo + j, (ki*KW + kj)*Cg + c]
//       = x[n, i*sh - ph + ki*dh, j*sw - pw + kj*dw, g*Cg + c]   (0 outside the image)
//
// col2im is the adjoint: each dx element GATHERS the cols entries that read it, in
// (ki, kj) order, so no atomics are needed and the result is deterministic:
//   dx[n, h, w, g*Cg + c] = sum over (ki, kj) with (h + ph - ki*dh) = i*sh,
//                           (w + pw - kj*dw) = j*sw, 0 <= i < Ho, 0 <= j < Wo of
//                           cols[g, (n*Ho + i)*Wo + j, (ki*KW + kj)*Cg + c]
//
// Launch: 1-D grid-stride over the OUTPUT elements (cols for im2col, dx for col2im);
// any grid and block. Consecutive threads handle consecutive channels, so reads and
// writes are coalesced. All index math is 64-bit.

template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols,
                       long long N, long long H, long long W, long long C, long long G,
                       long long KH, long long KW, long long sh, long long sw,
                       long long ph, long long pw, long long dh, long long dw,
                       long long Ho, long long Wo)
{
    const long long Cg = C / G;
    const long long K = KH * KW * Cg;
    const long long M = N * Ho * Wo;
    const long long total = G * M * K;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long k = e % K;
        long long gm = e / K;
        long long m = gm % M;
        long long g = gm / M;
        long long c = k % Cg;
        long long kk = k / Cg;
        long long kj = kk % KW, ki = kk / KW;
        long long j = m % Wo;
        long long ni = m / Wo;
        long long i = ni % Ho, n = ni / Ho;
        long long h = i * sh - ph + ki * dh;
        long long w = j * sw - pw + kj * dw;
        T v = T(0);
        if (h >= 0 && h < H && w >= 0 && w < W) v = x[((n * H + h) * W + w) * C + g * Cg + c];
        cols[e] = v;
    }
}

template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ dx,
                       long long N, long long H, long long W, long long C, long long G,
                       long long KH, long long KW, long long sh, long long sw,
                       long long ph, long long pw, long long dh, long long dw,
                       long long Ho, long long Wo)
{
    const long long Cg = C / G;
    const long long K = KH * KW * Cg;
    const long long M = N * Ho * Wo;
    const long long total = N * H * W * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long ch = e % C;
        long long nhw = e / C;
        long long w = nhw % W;
        long long nh = nhw / W;
        long long h = nh % H, n = nh / H;
        long long g = ch / Cg, c = ch % Cg;
        const T* colg = cols + g * M * K;
        T acc = T(0);
        for (long long ki = 0; ki < KH; ++ki) {
            long long t = h + ph - ki * dh;  // = i * sh for the window row i that reads h
            if (t < 0) break;                // t only shrinks as ki grows
            if (t % sh) continue;
            long long i = t / sh;
            if (i >= Ho) continue;
            for (long long kj = 0; kj < KW; ++kj) {
                long long u = w + pw - kj * dw;
                if (u < 0) break;
                if (u % sw) continue;
                long long j = u / sw;
                if (j >= Wo) continue;
                acc += colg[((n * Ho + i) * Wo + j) * K + (ki * KW + kj) * Cg + c];
            }
        }
        dx[e] = acc;
    }
}

// Instantiations, passed by kernels.load("conv") as name_expressions:
// @instantiate im2col<float>
// @instantiate im2col<double>
// @instantiate col2im<float>
// @instantiate col2im<double>
