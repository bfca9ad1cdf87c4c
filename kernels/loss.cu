// The mean squared error, reduced deterministically: a fixed grid of blocks each sums a fixed
// stride of elements (warp shuffles, then shared memory), then one block adds the block sums
// in a fixed order.
#include "whorl.cuh"

// One partial sum per warp of a block.
#define MSE_SHARED_FLOATS (WHORL_THREADS / 32)

// partial[block] = sum over i = block * 256 + thread, stepping by the grid, of (p - t)^2.
// Grid: a fixed number of blocks (partial's length); block 256; dynamic shared
// MSE_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
mse_partials(int len, const float* __restrict__ prediction, const float* __restrict__ target,
             float* __restrict__ partial) {
    WHORL_DYNAMIC_SHARED(float, warp_sums);
    float sum = 0.0f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        float d = prediction[i] - target[i];
        sum += d * d;
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int w = 0; w < int(blockDim.x / 32); ++w) total += warp_sums[w];
        partial[blockIdx.x] = total;
    }
}

// mse_finish's running sums, one double per thread.
#define MSE_FINISH_SHARED_FLOATS (2 * WHORL_THREADS)

// out[0] = (sum of partial[0 .. blocks]) / len, in a fixed order: thread i adds partials i,
// i + 256, ... in double, then thread 0 adds the threads' sums in thread order. Its partials
// come from mse_partials or from a scored forward kernel (conv2d_one_channel.cu), one per block.
// Grid 1; block 256; dynamic shared MSE_FINISH_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
mse_finish(int blocks, int len, const float* __restrict__ partial, float* __restrict__ out) {
    WHORL_DYNAMIC_SHARED(double, thread_sums);
    double sum = 0.0;
    for (int b = threadIdx.x; b < blocks; b += blockDim.x) sum += partial[b];
    thread_sums[threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.x != 0) return;
    double total = 0.0;
    for (int t = 0; t < int(blockDim.x); ++t) total += thread_sums[t];
    out[0] = float(total / len);
}
