// 3x3 'same' convolutions in NHWC as tiled GEMMs over gathered input windows (implicit im2col).
//
// One kernel serves every pass. For each pixel p of an output grid it gathers a window of a
// source tensor into a row A[p, k], k = tap * channels + channel, and computes
// out[p, n] = epilogue(sum over k of A[p, k] * W[k, n]):
//   forward:                 source x, 3x3 window, stride 1, origin -1; W = kernel [9 cin, cout]
//   forward, upsampled x:    the same over the 2x grid, the source read at (row / 2, col / 2)
//   backward-data:           source dz, W = kernel flipped in space, transposed in channels
//   backward-data, upsampled: source dz, 4x4 window, stride 2, origin -1; W = the taps folded
//                             onto each source pixel (conv2d_fold_upsampled_kernel)
#include "whorl.cuh"

// Tile of the output: 128 pixels x 64 channels per block of 256 threads, K in steps of 16;
// each thread accumulates 8 pixels x 4 channels in registers.
#define GEMM_TILE_P 128
#define GEMM_TILE_N 64
#define GEMM_TILE_K 16
#define GEMM_THREAD_P 8
#define GEMM_THREAD_N 4
#define GEMM_SHARED_FLOATS (GEMM_TILE_P * (GEMM_TILE_K + 1) + GEMM_TILE_K * GEMM_TILE_N)

// Kernel-gradient tile: 64 rows of K x 64 channels per block, over 32 pixels at a time.
#define FILTER_TILE_K 64
#define FILTER_TILE_N 64
#define FILTER_TILE_P 32
#define FILTER_SHARED_FLOATS (2 * FILTER_TILE_P * (FILTER_TILE_K + 1))

// Where a gathered window element comes from: the source index, or -1 in the zero padding.
__device__ __forceinline__ int gather_index(int pixel, int k, int grid_h, int grid_w, int src_h,
                                            int src_w, int src_c, int window, int stride,
                                            int origin, int upsampled) {
    int image = pixel / (grid_h * grid_w);
    int i = pixel / grid_w % grid_h, j = pixel % grid_w;
    int tap = k / src_c, channel = k % src_c;
    int row = stride * i + tap / window + origin;
    int col = stride * j + tap % window + origin;
    int height = upsampled ? 2 * src_h : src_h, width = upsampled ? 2 * src_w : src_w;
    if (row < 0 || col < 0 || row >= height || col >= width) return -1;
    if (upsampled) {
        row /= 2;
        col /= 2;
    }
    return ((image * src_h + row) * src_w + col) * src_c + channel;
}

__device__ __forceinline__ float activate(float z, int activation) {
    if (activation == WHORL_RELU) return fmaxf(z, 0.0f);
    if (activation == WHORL_SIGMOID) return 1.0f / (1.0f + __expf(-z));
    return z;
}

// out[p, n] = activation(bias[n] + sum over k of window(p)[k] * weights[k, n]).
// Grid: (ceil(pixels / GEMM_TILE_P), ceil(n / GEMM_TILE_N)); block: 256 threads; dynamic
// shared memory GEMM_SHARED_FLOATS. Thread t computes channels 4 (t % 16) .. + 4 of pixels
// 8 (t / 16) .. + 8: per step of K, 8 + 4 shared-memory reads feed 32 multiply-adds. The 16
// threads of a half-warp share their pixels (broadcast reads) and read adjacent channels.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm(const float* __restrict__ src, int grid_n, int grid_h, int grid_w, int src_h,
                     int src_w, int src_c, int window, int stride, int origin, int upsampled,
                     const float* __restrict__ weights, int n, const float* __restrict__ bias,
                     int activation, float* __restrict__ out) {
    WHORL_DYNAMIC_SHARED(float, shared);
    float* a_tile = shared;                          // [GEMM_TILE_P][GEMM_TILE_K + 1]
    float* w_tile = shared + GEMM_TILE_P * (GEMM_TILE_K + 1);  // [GEMM_TILE_K][GEMM_TILE_N]
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int p0 = blockIdx.x * GEMM_TILE_P, n0 = blockIdx.y * GEMM_TILE_N;
    const int t = threadIdx.x;
    const int first_column = (t % (GEMM_TILE_N / GEMM_THREAD_N)) * GEMM_THREAD_N;
    const int first_row = (t / (GEMM_TILE_N / GEMM_THREAD_N)) * GEMM_THREAD_P;
    float acc[GEMM_THREAD_P][GEMM_THREAD_N];
    for (int r = 0; r < GEMM_THREAD_P; ++r)
        for (int c = 0; c < GEMM_THREAD_N; ++c) acc[r][c] = 0.0f;
    for (int k0 = 0; k0 < k_total; k0 += GEMM_TILE_K) {
        for (int e = t; e < GEMM_TILE_P * GEMM_TILE_K; e += WHORL_THREADS) {
            int p = p0 + e / GEMM_TILE_K, k = k0 + e % GEMM_TILE_K;
            float value = 0.0f;
            if (p < pixels && k < k_total) {
                int at = gather_index(p, k, grid_h, grid_w, src_h, src_w, src_c, window, stride,
                                      origin, upsampled);
                if (at >= 0) value = src[at];
            }
            a_tile[(e / GEMM_TILE_K) * (GEMM_TILE_K + 1) + e % GEMM_TILE_K] = value;
        }
        for (int e = t; e < GEMM_TILE_K * GEMM_TILE_N; e += WHORL_THREADS) {
            int k = k0 + e / GEMM_TILE_N, c = n0 + e % GEMM_TILE_N;
            w_tile[e] = (k < k_total && c < n) ? weights[k * n + c] : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < GEMM_TILE_K; ++kk) {
            float a[GEMM_THREAD_P], w[GEMM_THREAD_N];
            for (int r = 0; r < GEMM_THREAD_P; ++r) a[r] = a_tile[(first_row + r) * (GEMM_TILE_K + 1) + kk];
            for (int c = 0; c < GEMM_THREAD_N; ++c) w[c] = w_tile[kk * GEMM_TILE_N + first_column + c];
            for (int r = 0; r < GEMM_THREAD_P; ++r)
                for (int c = 0; c < GEMM_THREAD_N; ++c) acc[r][c] += a[r] * w[c];
        }
        __syncthreads();
    }
    for (int c = 0; c < GEMM_THREAD_N; ++c) {
        const int channel = n0 + first_column + c;
        if (channel >= n) break;
        const float b = bias ? bias[channel] : 0.0f;
        for (int r = 0; r < GEMM_THREAD_P; ++r) {
            int p = p0 + first_row + r;
            if (p < pixels) out[p * n + channel] = activate(acc[r][c] + b, activation);
        }
    }
}

// flipped[2 - ky, 2 - kx, co, ci] = kernel[ky, kx, ci, co]: backward-data's weights.
// One thread per element; grid ceil(9 cin cout / 256), block 256.
extern "C" __global__ void conv2d_flip_kernel(const float* __restrict__ kernel, int cin, int cout,
                                              float* __restrict__ flipped) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= 9 * cin * cout) return;
    int tap = e / (cin * cout), ci = e / cout % cin, co = e % cout;
    flipped[((8 - tap) * cout + co) * cin + ci] = kernel[e];
}

// folded[dr, dc, co, ci] = sum of kernel[ky, kx, ci, co] over the taps by which the output at
// (2i - 1 + dr, 2j - 1 + dc) reads source pixel (i, j) through a nearest x2 upsampling:
// ky in {2}, {1, 2}, {0, 1}, {0} for dr = 0, 1, 2, 3 (the same for kx and dc).
// One thread per element; grid ceil(16 cout cin / 256), block 256.
extern "C" __global__ void conv2d_fold_upsampled_kernel(const float* __restrict__ kernel, int cin,
                                                        int cout, float* __restrict__ folded) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= 16 * cout * cin) return;
    int dr = e / (4 * cout * cin), dc = e / (cout * cin) % 4, co = e / cin % cout, ci = e % cin;
    const int first[4] = {2, 1, 0, 0}, last[4] = {2, 2, 1, 0};
    float sum = 0.0f;
    for (int ky = first[dr]; ky <= last[dr]; ++ky)
        for (int kx = first[dc]; kx <= last[dc]; ++kx)
            sum += kernel[((ky * 3 + kx) * cin + ci) * cout + co];
    folded[e] = sum;
}

// Partial kernel-and-bias gradients of one chunk of output pixels:
// partial[chunk, k, c] = sum over its pixels p of window(p)[k] * dz[p, c], where row k = K
// (one past the window) is all ones, so that row is the bias gradient.
// Grid: (ceil((K + 1) / 64), ceil(n / 64), chunks); block 256; dynamic shared memory
// FILTER_SHARED_FLOATS. Thread t computes rows 4 (t / 16) .. + 4 and columns 4 (t % 16) .. + 4
// of the block's 64 x 64 tile: per pixel, 4 + 4 shared-memory reads feed 16 multiply-adds.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials(const float* __restrict__ src, int grid_n, int grid_h, int grid_w,
                       int src_h, int src_w, int src_c, int window, int stride, int origin,
                       int upsampled, const float* __restrict__ dz, int n, int pixels_per_chunk,
                       float* __restrict__ partial) {
    WHORL_DYNAMIC_SHARED(float, shared);
    const int row_stride = FILTER_TILE_K + 1;
    float* a_tile = shared;                                // [pixels][k]: window values
    float* g_tile = shared + FILTER_TILE_P * row_stride;  // [pixels][channel]: dz
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int k0 = blockIdx.x * FILTER_TILE_K, n0 = blockIdx.y * FILTER_TILE_N, chunk = blockIdx.z;
    const int begin = chunk * pixels_per_chunk;
    const int end = min(pixels, begin + pixels_per_chunk);
    const int t = threadIdx.x, first_column = (t % 16) * 4, first_row = (t / 16) * 4;
    float acc[4][4];
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
    for (int p0 = begin; p0 < end; p0 += FILTER_TILE_P) {
        for (int e = t; e < FILTER_TILE_P * FILTER_TILE_K; e += WHORL_THREADS) {
            int q = e / FILTER_TILE_K, column = e % FILTER_TILE_K;
            int p = p0 + q, k = k0 + column, c = n0 + column;
            float value = 0.0f;
            if (p < end && k < k_total) {
                int at = gather_index(p, k, grid_h, grid_w, src_h, src_w, src_c, window, stride,
                                      origin, upsampled);
                if (at >= 0) value = src[at];
            } else if (p < end && k == k_total) {
                value = 1.0f;
            }
            a_tile[q * row_stride + column] = value;
            g_tile[q * row_stride + column] = (p < end && c < n) ? dz[p * n + c] : 0.0f;
        }
        __syncthreads();
        for (int q = 0; q < FILTER_TILE_P; ++q) {
            float a[4], g[4];
            for (int r = 0; r < 4; ++r) a[r] = a_tile[q * row_stride + first_row + r];
            for (int c = 0; c < 4; ++c) g[c] = g_tile[q * row_stride + first_column + c];
            for (int r = 0; r < 4; ++r)
                for (int c = 0; c < 4; ++c) acc[r][c] += a[r] * g[c];
        }
        __syncthreads();
    }
    for (int r = 0; r < 4; ++r) {
        const int k = k0 + first_row + r;
        for (int c = 0; c < 4; ++c) {
            const int channel = n0 + first_column + c;
            if (k <= k_total && channel < n)
                partial[(size_t(chunk) * (k_total + 1) + k) * n + channel] = acc[r][c];
        }
    }
}

// out[e] = sum over chunks, in order, of partial[chunk, e]: deterministic.
// One thread per element; grid ceil(count / 256), block 256.
extern "C" __global__ void sum_partials(const float* __restrict__ partial, int chunks, int count,
                                        float* __restrict__ out) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= count) return;
    float sum = 0.0f;
    for (int c = 0; c < chunks; ++c) sum += partial[size_t(c) * count + e];
    out[e] = sum;
}
