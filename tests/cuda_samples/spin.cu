// Threads and blocks that talk through memory with atomics and volatile, as on a GPU.
// handoff: in each block, thread 0 waits (spinning on an atomic) for a flag that the
//          block's last thread sets after writing its value; out[block] = that value.
// handoff_volatile: the same with a volatile load and __threadfence().
// wait_for_block: block b waits for flags[b - 1] (set by the block before it) and then
//                 sets flags[b]: a chain that a GPU may or may not run (it depends on
//                 which blocks are resident); the emulator runs blocks in order, so it
//                 works. With reversed=1 each block waits for the block after it: a
//                 deadlock on the emulator, reported.
// lock_sum: every thread adds to *sum under a spin lock built on atomicCAS.

extern "C" __global__ void handoff(const int* x, int* flags, int* out)
{
    __shared__ int value;
    if (threadIdx.x == blockDim.x - 1) {
        value = x[blockIdx.x];
        __threadfence_block();
        atomicExch(&flags[blockIdx.x], 1);
    }
    if (threadIdx.x == 0) {
        while (atomicAdd(&flags[blockIdx.x], 0) == 0) {
        }
        out[blockIdx.x] = value;
    }
}

extern "C" __global__ void handoff_volatile(const int* x, int* flags, int* out)
{
    __shared__ int value;
    volatile int* flag = &flags[blockIdx.x];
    if (threadIdx.x == blockDim.x - 1) {
        value = x[blockIdx.x];
        __threadfence();
        *flag = 1;
    }
    if (threadIdx.x == 0) {
        while (*flag == 0) {
        }
        out[blockIdx.x] = value;
    }
}

extern "C" __global__ void wait_for_block(int* flags, int reversed)
{
    int b = blockIdx.x;
    int before = reversed ? b + 1 : b - 1;
    if (threadIdx.x == 0) {
        if (before >= 0 && before < (int)gridDim.x)
            while (atomicCAS(&flags[before], 1, 1) != 1) {
                __nanosleep(100);
            }
        atomicExch(&flags[b], 1);
    }
}

extern "C" __global__ void lock_sum(const int* x, int* lock, int* sum)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    while (atomicCAS(lock, 0, 1) != 0) {
    }
    *sum += x[i];
    __threadfence();
    atomicExch(lock, 0);
}
