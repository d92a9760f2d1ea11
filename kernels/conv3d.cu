// conv3d.cu: im2col and col2im for 3-D convolution on channels-first (NCDHW) volumes.
//
// The convolution itself is a GEMM on the columns these kernels build: cupy.matmul
// (cuBLAS) on the GPU, numpy.matmul on the emulator path (mpicnn/ops/cuda/conv3d.py).
// Reference: mpicnn/ops/conv3d.py (same geometry, PyTorch semantics, floor mode).
//
// Layouts (row-major):
//   x     (N, C, D, H, W)                 input, NCDHW; C = G * Cg
//   cols  (G, N*Do*Ho*Wo, KD*KH*KW*Cg)    one row per output voxel (n, i, j, k); columns
//                                         in (a, p, q, c) order, matching the weight
//                                         matrix w (O, Cg, KD, KH, KW) -> (G, KD*KH*KW*Cg, O/G)
//   dx    (N, C, D, H, W)                 col2im output
//
//   cols[g, ((n*Do + i)*Ho + j)*Wo + k, ((a*KH + p)*KW + q)*Cg + c]
//       = x[n, g*Cg + c, i*sd - pd + a*dd, j*sh - ph + p*dh, k*sw - pw + q*dw]  (0 outside)
//
// col2im is the adjoint: each dx element GATHERS the cols entries that read it, in
// (a, p, q) order (the order the reference adds them), so no atomics are needed and the
// result is deterministic.
//
// Launch: 1-D grid-stride over the OUTPUT elements (cols for im2col, dx for col2im);
// any grid and block. All index math is 64-bit.

template <typename T>
__global__ void im2col3d(const T* __restrict__ x, T* __restrict__ cols,
                         long long N, long long C, long long D, long long H, long long W, long long G,
                         long long KD, long long KH, long long KW,
                         long long sd, long long sh, long long sw,
                         long long pd, long long ph, long long pw,
                         long long dd, long long dh, long long dw,
                         long long Do, long long Ho, long long Wo)
{
    const long long Cg = C / G;
    const long long K = KD * KH * KW * Cg;
    const long long M = N * Do * Ho * Wo;
    const long long total = G * M * K;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long t = e % K;
        const long long gm = e / K;
        const long long m = gm % M, g = gm / M;
        const long long c = t % Cg;
        t /= Cg;
        const long long q = t % KW;
        t /= KW;
        const long long p = t % KH, a = t / KH;
        long long r = m;
        const long long k = r % Wo;
        r /= Wo;
        const long long j = r % Ho;
        r /= Ho;
        const long long i = r % Do, n = r / Do;
        const long long d = i * sd - pd + a * dd;
        const long long h = j * sh - ph + p * dh;
        const long long w = k * sw - pw + q * dw;
        T v = T(0);
        if (d >= 0 && d < D && h >= 0 && h < H && w >= 0 && w < W)
            v = x[(((n * C + g * Cg + c) * D + d) * H + h) * W + w];
        cols[e] = v;
    }
}

template <typename T>
__global__ void col2im3d(const T* __restrict__ cols, T* __restrict__ dx,
                         long long N, long long C, long long D, long long H, long long W, long long G,
                         long long KD, long long KH, long long KW,
                         long long sd, long long sh, long long sw,
                         long long pd, long long ph, long long pw,
                         long long dd, long long dh, long long dw,
                         long long Do, long long Ho, long long Wo)
{
    const long long Cg = C / G;
    const long long K = KD * KH * KW * Cg;
    const long long M = N * Do * Ho * Wo;
    const long long total = N * C * D * H * W;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = e;
        const long long w = r % W;
        r /= W;
        const long long h = r % H;
        r /= H;
        const long long d = r % D;
        r /= D;
        const long long ch = r % C, n = r / C;
        const long long g = ch / Cg, c = ch % Cg;
        const T* colg = cols + g * M * K;
        T acc = T(0);
        for (long long a = 0; a < KD; ++a) {
            const long long td = d + pd - a * dd;  // = i * sd for the window that reads d
            if (td < 0) break;                     // only shrinks as a grows
            if (td % sd) continue;
            const long long i = td / sd;
            if (i >= Do) continue;
            for (long long p = 0; p < KH; ++p) {
                const long long th = h + ph - p * dh;
                if (th < 0) break;
                if (th % sh) continue;
                const long long j = th / sh;
                if (j >= Ho) continue;
                for (long long q = 0; q < KW; ++q) {
                    const long long tw = w + pw - q * dw;
                    if (tw < 0) break;
                    if (tw % sw) continue;
                    const long long k = tw / sw;
                    if (k >= Wo) continue;
                    acc += colg[(((n * Do + i) * Ho + j) * Wo + k) * K + ((a * KH + p) * KW + q) * Cg + c];
                }
            }
        }
        dx[e] = acc;
    }
}

// Instantiations, passed by kernels.load("conv3d") as name_expressions:
// @instantiate im2col3d<float>
// @instantiate im2col3d<double>
// @instantiate col2im3d<float>
// @instantiate col2im3d<double>
