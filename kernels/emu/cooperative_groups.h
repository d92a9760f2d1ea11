// cooperative_groups.h for the CPU emulator: thread blocks and warp tiles (sync, ranks,
// shuffles, votes). Grid-wide sync is refused: blocks run one after another, so a
// block waiting for the whole grid would wait forever.
#pragma once

namespace cooperative_groups {

struct thread_block {
    void sync(__EMU_SITE) const { __syncthreads(file, line); }
    unsigned int thread_rank() const { return (unsigned int)__emu_tid; }
    unsigned int size() const { return blockDim.x * blockDim.y * blockDim.z; }
    unsigned int num_threads() const { return size(); }
    dim3 group_index() const { return dim3(blockIdx); }
    dim3 thread_index() const { return dim3(threadIdx); }
    dim3 group_dim() const { return blockDim; }
    dim3 dim_threads() const { return blockDim; }
};
static inline thread_block this_thread_block() { return thread_block(); }

template <unsigned int N>
struct thread_block_tile {
    static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "tile size must be a power of two up to 32");
    unsigned int base() const { return (unsigned int)__emu_tid & 31u & ~(N - 1); }
    unsigned int mask() const { return N == 32 ? 0xffffffffu : ((1u << N) - 1) << base(); }
    void sync(__EMU_SITE) const { (void)file, (void)line; __syncwarp(mask()); }
    unsigned int thread_rank() const { return (unsigned int)__emu_tid & (N - 1); }
    static constexpr unsigned int size() { return N; }
    static constexpr unsigned int num_threads() { return N; }
    unsigned int meta_group_rank() const { return (unsigned int)__emu_tid / N; }
    unsigned int meta_group_size() const { return (blockDim.x * blockDim.y * blockDim.z + N - 1) / N; }
    template <class T> T shfl(T v, int src) const { return __shfl_sync(mask(), v, src, N); }
    template <class T> T shfl_down(T v, unsigned int d) const { return __shfl_down_sync(mask(), v, d, N); }
    template <class T> T shfl_up(T v, unsigned int d) const { return __shfl_up_sync(mask(), v, d, N); }
    template <class T> T shfl_xor(T v, int m) const { return __shfl_xor_sync(mask(), v, m, N); }
    int any(int p) const { return __any_sync(mask(), p); }
    int all(int p) const { return __all_sync(mask(), p); }
    unsigned int ballot(int p) const { return __ballot_sync(mask(), p) >> base(); }
};
template <unsigned int N>
static inline thread_block_tile<N> tiled_partition(const thread_block&) { return thread_block_tile<N>(); }

struct grid_group {
    template <class T = void>
    void sync(__EMU_SITE) const {
        static_assert(__emu_refused<T>::value,
                      "mpicnn emulator: grid-wide sync (cooperative_groups grid_group::sync) cannot run on the "
                      "CPU emulator, which runs blocks one after another");
    }
    unsigned long long size() const {
        return (unsigned long long)gridDim.x * gridDim.y * gridDim.z * blockDim.x * blockDim.y * blockDim.z;
    }
};
static inline grid_group this_grid() { return grid_group(); }

template <class G>
static inline void sync(const G& g, __EMU_SITE) { g.sync(file, line); }

}  // namespace cooperative_groups
