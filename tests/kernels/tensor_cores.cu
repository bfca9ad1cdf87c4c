// Tensor-core tiles for the emulator's wmma tests: one warp per launch.
#include "whorl.cuh"
#ifndef WHORL_EMULATOR
#include <mma.h>
#endif

// c[16 x 16] = a[16 x 8] b[8 x 16], row-major, in TF32 with float32 accumulation.
extern "C" __global__ void wmma_tf32_tile(const float* a, const float* b, float* c) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a, 8);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// c[16 x 16] = half(a)[16 x 16] half(b)[16 x 16] + c, b column-major: the inputs are first
// converted to __half in shared memory (dynamic, 2 x 256 halves), 8 elements per lane.
extern "C" __global__ void wmma_half_tile(const float* a, const float* b, float* c) {
    using namespace nvcuda;
    WHORL_DYNAMIC_SHARED(__half, staged);
    for (int i = threadIdx.x; i < 256; i += 32) {
        staged[i] = __float2half(a[i]);
        staged[256 + i] = __float2half(b[i]);
    }
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::load_matrix_sync(fc, c, 16, wmma::mem_row_major);
    wmma::load_matrix_sync(fa, staged, 16);
    wmma::load_matrix_sync(fb, staged + 256, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// out[i] = float(half(in[i])) and float(bfloat16(in[i])): the storage conversions.
// One thread per element; grid ceil(n / 256), block 256.
extern "C" __global__ void round_trip_half(int n, const float* in, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __half2float(__float2half(in[i]));
}

extern "C" __global__ void round_trip_bfloat16(int n, const float* in, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __bfloat162float(__float2bfloat16(in[i]));
}
