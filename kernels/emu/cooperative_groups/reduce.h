// cooperative_groups/reduce.h for the CPU emulator: cg::reduce over a warp tile with
// the function objects of CUDA's header (plus, less, greater, bit_and, bit_or, bit_xor).
// Every lane gets the result, as on a GPU; the butterfly order of shfl_xor is the one
// NVIDIA documents for integers (floating-point sums may round differently from a GPU).
#pragma once
#include "../cooperative_groups.h"

namespace cooperative_groups {

template <class T> struct plus { T operator()(T a, T b) const { return a + b; } };
template <class T> struct less { T operator()(T a, T b) const { return b < a ? b : a; } };
template <class T> struct greater { T operator()(T a, T b) const { return a < b ? b : a; } };
template <class T> struct bit_and { T operator()(T a, T b) const { return a & b; } };
template <class T> struct bit_or { T operator()(T a, T b) const { return a | b; } };
template <class T> struct bit_xor { T operator()(T a, T b) const { return a ^ b; } };

template <unsigned int N, class T, class Op>
static inline T reduce(const thread_block_tile<N>& tile, T value, Op op) {
    for (unsigned int offset = N / 2; offset > 0; offset /= 2) value = op(value, tile.shfl_xor(value, (int)offset));
    return value;
}

}  // namespace cooperative_groups
