// dense_loss.cu: losses of dense prediction: per-pixel/per-voxel softmax cross-entropy
// (ignore_index, class weights) and mean squared error.
//
// Reference: mpicnn/ops/dense_loss.py (torch.nn.functional.cross_entropy and mse_loss,
// reduction "mean"). Row-major, T float or double (name_expressions
// dense_xent_forward<float>, ...).
//
// Cross-entropy: logits z (N, K, S) (S = the positions of a sample, 1 for (N, K)
// logits), targets t (N*S) int64, weight (K) double (ones without class weights).
// Per position (n, s), t' = t if t != ignore_index else 0:
//   dense_xent_forward   m = max_k z (T); e = exp(z - m) (T); s = sum_k e (T)
//                        probs[n, k, s] = e / s
//                        w[n, s]     = weight[t'] if t != ignore_index else 0   (double)
//                        wlogp[n, s] = w * (double(z[t'] - m) - log(double(s)))
//                        hits[n, s]  = 2 * (t != ignore_index) + (first argmax == t)
//                                      (np.argmax: a NaN is the maximum)
//   dense_xent_backward  d[n, k, s] = (probs - (k == t')) * T(w / divisor)  (0 when divisor is 0)
// The launcher sums wlogp, w and hits on the device and copies three figures to the host:
//   loss = -sum wlogp / divisor, divisor = sum w unless given.
//
// Mean squared error on pred and target of one shape (n elements):
//   mse_forward    diff = pred - target (T); sq = double(diff)^2
//   mse_backward   d = diff * scale,  scale = T(2 / total)
//
// Launch: 1-D grid-stride; xent forward over N*S positions (one thread loops over the K
// classes: rows are short), the others over their output's elements; any grid and block.

template <typename T>
__global__ void dense_xent_forward(const T* __restrict__ z, const long long* __restrict__ targets,
                                   const double* __restrict__ weight, T* __restrict__ probs,
                                   double* __restrict__ w, double* __restrict__ wlogp,
                                   int* __restrict__ hits, long long N, long long K, long long S,
                                   long long ignore_index)
{
    const long long total = N * S;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long n = e / S, s = e % S;
        const T* row = z + n * K * S + s;  // class k at row[k * S]
        T* p = probs + n * K * S + s;
        T m = row[0];
        long long arg = 0;
        for (long long k = 1; k < K; ++k) {
            const T v = row[k * S];
            if (m != m) break;  // NaN already found: it is the argmax
            if (v > m || v != v) { m = v; arg = k; }
        }
        T sum = T(0);
        for (long long k = 0; k < K; ++k) {
            const T ek = exp(row[k * S] - m);
            p[k * S] = ek;
            sum += ek;
        }
        for (long long k = 0; k < K; ++k) p[k * S] = p[k * S] / sum;
        const long long t = targets[e];
        const bool valid = t != ignore_index;
        const long long safe = valid ? t : 0;
        const double we = valid ? weight[safe] : 0.0;
        w[e] = we;
        wlogp[e] = we * ((double)(row[safe * S] - m) - log((double)sum));
        hits[e] = valid ? 2 + (arg == t) : 0;
    }
}

template <typename T>
__global__ void dense_xent_backward(const T* __restrict__ probs, const long long* __restrict__ targets,
                                    const double* __restrict__ w, T* __restrict__ d, long long N,
                                    long long K, long long S, long long ignore_index, double divisor)
{
    const long long total = N * K * S;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long s = e % S, k = (e / S) % K, n = e / (K * S);
        const long long t = targets[n * S + s];
        const long long safe = t != ignore_index ? t : 0;
        const double we = w[n * S + s];
        const T scale = (T)(divisor != 0.0 ? we / divisor : 0.0 * we);
        T v = probs[e];
        if (k == safe) v = v - T(1);
        d[e] = v * scale;
    }
}

template <typename T>
__global__ void mse_forward(const T* __restrict__ pred, const T* __restrict__ target,
                            T* __restrict__ diff, double* __restrict__ sq, long long n)
{
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const T v = pred[e] - target[e];
        diff[e] = v;
        sq[e] = (double)v * (double)v;
    }
}

template <typename T>
__global__ void mse_backward(const T* __restrict__ diff, T* __restrict__ d, long long n, T scale)
{
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x)
        d[e] = diff[e] * scale;
}

// Instantiations, passed by kernels.load("dense_loss") as name_expressions:
// @instantiate dense_xent_forward<float>
// @instantiate dense_xent_forward<double>
// @instantiate dense_xent_backward<float>
// @instantiate dense_xent_backward<double>
// @instantiate mse_forward<float>
// @instantiate mse_forward<double>
// @instantiate mse_backward<float>
// @instantiate mse_backward<double>
