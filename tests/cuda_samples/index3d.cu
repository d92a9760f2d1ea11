// 3-D grids and blocks: every element of a (Z, Y, X) volume gets the linear id of the
// thread that covers it: block id (x fastest) * threads per block + thread id in block.
extern "C" __global__ void fill_index3d(int* out, int X, int Y, int Z)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z * blockDim.z + threadIdx.z;
    if (x < X && y < Y && z < Z) {
        int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
        int bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
        out[(z * Y + y) * X + x] = bid * (blockDim.x * blockDim.y * blockDim.z) + tid;
    }
}
