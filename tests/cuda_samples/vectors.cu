// Vector types: v = a * v + (1, 2, 3, 4) on float4 elements (16-byte aligned data).
extern "C" __global__ void scale4(float4* v, float a, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float4 t = v[i];
        float4 b = make_float4(1.0f, 2.0f, 3.0f, 4.0f);
        v[i] = make_float4(a * t.x + b.x, a * t.y + b.y, a * t.z + b.z, a * t.w + b.w);
    }
}
