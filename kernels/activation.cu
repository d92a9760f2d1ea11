// activation.cu: ReLU and LeakyReLU, forward and backward.
//
// Elementwise, so any shape and layout: every array is a flat, contiguous run of n
// values of type T (float or double; instantiated as relu_forward<float> and
// relu_forward<double> through name_expressions). References: mpicnn/ops/activation.py.
//
//   relu_forward         y  = max(x, 0)              NaN propagates, as np.maximum
//   relu_backward        dx = (y > 0 ? 1 : 0) * dy   y is the forward OUTPUT; the 0/1
//                                                    factor multiplies, as NumPy does
//   leaky_relu_forward   y  = x > 0 ? x : s * x      (NaN: s * NaN = NaN)
//   leaky_relu_backward  dx = x > 0 ? dy : s * dy    x is the forward INPUT
//
// Launch: 1-D grid-stride loops; any grid and block size (the launcher uses 256
// threads). Indices are 64-bit.

template <typename T>
__global__ void relu_forward(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T v = x[i];
        y[i] = v < T(0) ? T(0) : v;  // NaN compares false: kept
    }
}

template <typename T>
__global__ void relu_backward(const T* __restrict__ dy, const T* __restrict__ y,
                              T* __restrict__ dx, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        dx[i] = (y[i] > T(0) ? T(1) : T(0)) * dy[i];
    }
}

template <typename T>
__global__ void leaky_relu_forward(const T* __restrict__ x, T* __restrict__ y, T slope,
                                   long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T v = x[i];
        y[i] = v > T(0) ? v : v * slope;
    }
}

template <typename T>
__global__ void leaky_relu_backward(const T* __restrict__ dy, const T* __restrict__ x,
                                    T* __restrict__ dx, T slope, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T g = dy[i];
        dx[i] = x[i] > T(0) ? g : g * slope;
    }
}

// Instantiations, passed by kernels.load("activation") as name_expressions:
// @instantiate relu_forward<float>
// @instantiate relu_forward<double>
// @instantiate relu_backward<float>
// @instantiate relu_backward<double>
// @instantiate leaky_relu_forward<float>
// @instantiate leaky_relu_forward<double>
// @instantiate leaky_relu_backward<float>
// @instantiate leaky_relu_backward<double>
