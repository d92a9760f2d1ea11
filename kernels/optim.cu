// optim.cu: fused optimizer updates, SGD (momentum, Nesterov, weight decay) and
// Adam/AdamW, one launch per parameter tensor.
//
// Reference: mpicnn/nn/optim.py (PyTorch's update rules). Arrays are flat runs of n
// values of T (float or double; name_expressions sgd_update<float>, ...). Every
// scalar is computed by the launcher exactly as the reference computes it (in T,
// NumPy scalar arithmetic), and every step below rounds in T in the reference's
// order, so the results are NumPy's bits (build with --fmad=false on the GPU: a fused
// multiply-add would round once where NumPy rounds twice).
//
// sgd_update, flags: 1 weight decay, 2 momentum, 4 Nesterov, 8 first step.
//   d = g (+ weight_decay * w)
//   momentum: buf = d on the first step (PyTorch starts the buffer at the first
//             gradient), else buf = buf * momentum + (1 - dampening) * d;
//             d = Nesterov ? d + momentum * buf : buf
//   w = w - lr * d
//
// adam_update, flags: 1 L2 weight decay (Adam), 2 decoupled weight decay (AdamW).
//   AdamW: w = w * decay,  decay = 1 - lr * weight_decay
//   Adam:  g = g + weight_decay * w
//   m = m * b1 + (1 - b1) * g;   v = v * b2 + (1 - b2) * (g * g)
//   denom = sqrt(v) / sqrt(1 - b2^t) + eps
//   w = w - (step_size * m) / denom,   step_size = lr / (1 - b1^t)
//
// Launch: 1-D grid-stride over n; any grid and block.

template <typename T>
__global__ void sgd_update(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ buf,
                           long long n, T lr, T weight_decay, T momentum,
                           T one_minus_dampening, int flags)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T wi = w[i];
        T d = g[i];
        if (flags & 1) {
            const T decay = weight_decay * wi;
            d = d + decay;
        }
        if (flags & 2) {
            T b;
            if (flags & 8) {
                b = d;
            } else {
                const T kept = buf[i] * momentum;
                const T added = one_minus_dampening * d;
                b = kept + added;
            }
            buf[i] = b;
            if (flags & 4) {
                const T look = momentum * b;
                d = d + look;
            } else {
                d = b;
            }
        }
        const T delta = lr * d;
        w[i] = wi - delta;
    }
}

template <typename T>
__global__ void adam_update(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, long long n, T step_size, T weight_decay,
                            T decay, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2,
                            T sqrt_bias2, T eps, int flags)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T wi = w[i];
        T gi = g[i];
        if (flags & 2) wi = wi * decay;
        if (flags & 1) {
            const T l2 = weight_decay * wi;
            gi = gi + l2;
        }
        const T m_kept = m[i] * beta1;
        const T m_new = one_minus_beta1 * gi;
        const T mi = m_kept + m_new;
        const T v_kept = v[i] * beta2;
        const T g2 = gi * gi;
        const T v_new = one_minus_beta2 * g2;
        const T vi = v_kept + v_new;
        m[i] = mi;
        v[i] = vi;
        T denom = sqrt(vi) / sqrt_bias2;
        denom = denom + eps;
        const T num = step_size * mi;
        w[i] = wi - num / denom;
    }
}

// Instantiations, passed by kernels.load("optim") as name_expressions:
// @instantiate sgd_update<float>
// @instantiate sgd_update<double>
// @instantiate adam_update<float>
// @instantiate adam_update<double>
