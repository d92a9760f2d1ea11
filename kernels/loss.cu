// loss.cu: softmax cross-entropy on logits (N, K) with int64 labels (N,).
//
// Reference: mpicnn/ops/loss.py. Per sample n (row-major (N, K) arrays, T float or
// double; name_expressions softmax_xent_forward<float>, ...):
//
//   softmax_xent_forward   z = x - max_k x (T);  e = exp(z) (T);  s = sum_k e (T)
//                          probs[n, k] = e / s
//                          logp[n]     = double(z[label]) - log(double(s))
//                          correct[n]  = (first argmax_k x == label)   (NaN wins, as
//                                        np.argmax)
//   softmax_xent_backward  d[n, k] = (probs[n, k] - (k == label)) * scale,
//                          scale = T(1 / total) (0 when total is 0)
//
// The launcher sums logp (in double) and correct on the host: loss = -sum logp / total.
//
// Launch: forward: one thread per sample, 1-D grid-stride over N (rows are short;
// the loss is a negligible part of a step). Backward: 1-D grid-stride over N*K.

template <typename T>
__global__ void softmax_xent_forward(const T* __restrict__ x, const long long* __restrict__ labels,
                                     T* __restrict__ probs, double* __restrict__ logp,
                                     int* __restrict__ correct, long long N, long long K)
{
    for (long long n = blockIdx.x * (long long)blockDim.x + threadIdx.x; n < N;
         n += (long long)gridDim.x * blockDim.x) {
        const T* row = x + n * K;
        T* p = probs + n * K;
        T m = row[0];
        long long arg = 0;
        for (long long k = 1; k < K; ++k) {
            const T v = row[k];
            if (m != m) break;                 // NaN already found: it is the argmax
            if (v > m || v != v) { m = v; arg = k; }
        }
        T s = T(0);
        for (long long k = 0; k < K; ++k) {
            const T e = exp(row[k] - m);
            p[k] = e;
            s += e;
        }
        for (long long k = 0; k < K; ++k) p[k] = p[k] / s;
        const long long label = labels[n];
        logp[n] = (double)(row[label] - m) - log((double)s);
        correct[n] = arg == label;
    }
}

template <typename T>
__global__ void softmax_xent_backward(const T* __restrict__ probs,
                                      const long long* __restrict__ labels, T* __restrict__ d,
                                      long long N, long long K, T scale)
{
    const long long total = N * K;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long n = i / K, k = i % K;
        T v = probs[i];
        if (k == labels[n]) v = v - T(1);
        d[i] = v * scale;
    }
}

// Instantiations, passed by kernels.load("loss") as name_expressions:
// @instantiate softmax_xent_forward<float>
// @instantiate softmax_xent_forward<double>
// @instantiate softmax_xent_backward<float>
// @instantiate softmax_xent_backward<double>
