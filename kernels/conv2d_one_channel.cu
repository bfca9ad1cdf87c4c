// Convolutions with one input channel (conv1) or one output channel (conv6) as direct kernels.
// As tiled GEMMs they would be GEMMs of depth 9 or width 1: tiles of 64 or 128 channels doing
// one useful channel's work. Here every thread does useful work, reads are coalesced across
// the warp, and the passes run at the speed of the memory they must read.
#include "whorl.cuh"

// conv2d_one_input_channel: output channels per thread.
#define ONE_INPUT_CHANNELS 4

// conv2d_upsampled_one_output_channel: source cells per block (16 lanes each).
#define ONE_OUTPUT_LANES 16
#define ONE_OUTPUT_CELLS (WHORL_THREADS / ONE_OUTPUT_LANES)

// conv2d_filter_partials_one_channel: pixels whose windows a block stages at a time, the most
// columns (channels of the second operand, with a ones column) a thread covers in steps of 32,
// the running sums per column (9 taps and the ones row), and the shared memory: the staged
// windows (those 10 values each, padded to 12) and one set of sums per warp for the block's
// final, fixed-order reduction.
#define ONE_CHANNEL_TILE_P 64
#define ONE_CHANNEL_ROWS 10
#define ONE_CHANNEL_WINDOW 12
#define ONE_CHANNEL_GROUPS 3
#define ONE_CHANNEL_MAX_COLUMNS (32 * ONE_CHANNEL_GROUPS)
#define ONE_CHANNEL_WARPS (WHORL_THREADS / 32)
#define ONE_CHANNEL_SUMS (ONE_CHANNEL_WARPS * ONE_CHANNEL_ROWS * ONE_CHANNEL_MAX_COLUMNS)
#define ONE_CHANNEL_SHARED_FLOATS (ONE_CHANNEL_TILE_P * ONE_CHANNEL_WINDOW + ONE_CHANNEL_SUMS)

// y[image, 2s + a, 2t + b] = activation(bias + sum over dy, dx in {0, 1} and channels ci of
// phases[a, b, dy, dx, ci] x[image, s - 1 + a + dy, t - 1 + b + dx, ci]): a 3x3 convolution
// with one output channel of upsample2(x), as the four 2x2 phase convolutions of x (conv2d.cu
// derives them; conv2d_fold_phases_kernel folds the kernel, cout = 1).
// Each source cell (image, s, t) owns the four outputs it is the centre of, and 16 lanes share
// it: lane l reads channels l, l + 16, ... of the cell's 3x3 neighbourhood (a half-warp reads
// 64 contiguous bytes of each pixel), the half-warp adds its partial sums with shuffles and
// lane 0 writes the four outputs. Grid ceil(cells / 16), block 256; dynamic shared memory
// 16 cin floats (the phase kernel).
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_upsampled_one_output_channel(const float* __restrict__ x, int batch, int src_h, int src_w,
                                    int cin, const float* __restrict__ phases,
                                    const float* __restrict__ bias, int activation,
                                    float* __restrict__ y) {
    WHORL_DYNAMIC_SHARED(float, kernel);  // [a][b][dy][dx][ci]
    for (int e = threadIdx.x; e < 16 * cin; e += WHORL_THREADS) kernel[e] = phases[e];
    __syncthreads();
    const int lane = threadIdx.x % ONE_OUTPUT_LANES;
    const int cell = blockIdx.x * ONE_OUTPUT_CELLS + threadIdx.x / ONE_OUTPUT_LANES;
    const int cells = batch * src_h * src_w;
    const int image = cell / (src_h * src_w), s = cell / src_w % src_h, t = cell % src_w;
    float sums[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // [a][b]
    if (cell < cells) {
        const float* plane = x + size_t(image) * src_h * src_w * cin;
        // Neighbour (s + dr, t + dc) is tap (dy, dx) = (dr + 1 - a, dc + 1 - b) of output (a, b)
        // when both are 0 or 1.
        WHORL_UNROLL
        for (int dr = -1; dr <= 1; ++dr) {
            WHORL_UNROLL
            for (int dc = -1; dc <= 1; ++dc) {
                const int row = s + dr, col = t + dc;
                if (row < 0 || col < 0 || row >= src_h || col >= src_w) continue;
                const float* pixel = plane + size_t(row * src_w + col) * cin;
                for (int ci = lane; ci < cin; ci += ONE_OUTPUT_LANES) {
                    const float value = pixel[ci];
                    WHORL_UNROLL
                    for (int a = 0; a < 2; ++a) {
                        WHORL_UNROLL
                        for (int b = 0; b < 2; ++b) {
                            const int dy = dr + 1 - a, dx = dc + 1 - b;
                            if (dy < 0 || dy > 1 || dx < 0 || dx > 1) continue;
                            sums[a][b] += kernel[(((a * 2 + b) * 2 + dy) * 2 + dx) * cin + ci] *
                                          value;
                        }
                    }
                }
            }
        }
    }
    // The cells of a warp's two half-warps add their lanes' sums separately.
    WHORL_UNROLL
    for (int offset = ONE_OUTPUT_LANES / 2; offset > 0; offset /= 2)
        for (int a = 0; a < 2; ++a)
            for (int b = 0; b < 2; ++b)
                sums[a][b] += __shfl_xor_sync(0xffffffffu, sums[a][b], offset);
    if (lane != 0 || cell >= cells) return;
    const float b0 = bias ? bias[0] : 0.0f;
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
            y[(size_t(image) * 2 * src_h + 2 * s + a) * 2 * src_w + 2 * t + b] =
                activate(sums[a][b] + b0, activation);
}

// y[p, co] = activation(bias[co] + sum over taps (ty, tx) of kernel[ty, tx, 0, co]
// x[p + (ty - 1, tx - 1)]): a 3x3 'same' convolution of a one-channel input.
// One thread per pixel and group of 4 consecutive channels: it reads the pixel's nine inputs
// once for its 4 outputs (the threads of one pixel read the same inputs, as broadcasts), and a
// warp's stores cover consecutive channels of consecutive pixels. Grid ceil(pixels
// ceil(cout / 4) / 256), block 256; dynamic shared memory 9 cout floats (the kernel).
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_one_input_channel(const float* __restrict__ x, int batch, int h, int w,
                         const float* __restrict__ kernel, int cout,
                         const float* __restrict__ bias, int activation,
                         float* __restrict__ y) {
    WHORL_DYNAMIC_SHARED(float, taps);  // [ty][tx][co]
    for (int e = threadIdx.x; e < 9 * cout; e += WHORL_THREADS) taps[e] = kernel[e];
    __syncthreads();
    const int groups = (cout + ONE_INPUT_CHANNELS - 1) / ONE_INPUT_CHANNELS;
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * h * w * groups) return;
    const int co0 = e % groups * ONE_INPUT_CHANNELS, pixel = e / groups;
    const int image = pixel / (h * w), i = pixel / w % h, j = pixel % w;
    const float* plane = x + size_t(image) * h * w;
    float sums[ONE_INPUT_CHANNELS];
    WHORL_UNROLL
    for (int c = 0; c < ONE_INPUT_CHANNELS; ++c)
        sums[c] = (bias && co0 + c < cout) ? bias[co0 + c] : 0.0f;
    WHORL_UNROLL
    for (int tap = 0; tap < 9; ++tap) {
        const int row = i + tap / 3 - 1, col = j + tap % 3 - 1;
        if (row < 0 || col < 0 || row >= h || col >= w) continue;
        const float value = plane[row * w + col];
        WHORL_UNROLL
        for (int c = 0; c < ONE_INPUT_CHANNELS; ++c)
            if (co0 + c < cout) sums[c] += taps[tap * cout + co0 + c] * value;
    }
    float* out = y + size_t(pixel) * cout + co0;
    WHORL_UNROLL
    for (int c = 0; c < ONE_INPUT_CHANNELS; ++c)
        if (co0 + c < cout) out[c] = activate(sums[c], activation);
}

// conv2d_filter_partials (conv2d.cu) for a one-channel source: the same partials, the same
// layout, the same sum kernels after it, when the window has 9 values. With FILTER_ONES_ROW,
// partial[chunk, k, c] = sum over the chunk's pixels p of window(p)[k] second[p, c] for k < 9
// and the sum of second[p, c] at k = 9 (conv1: x's windows, dz the second operand); with
// FILTER_ONES_COLUMN, rows k < 9 and columns c <= n, column n the sum of window(p)[k] (conv6:
// the windows of dz's box sums, x the second operand).
// The block stages the windows of 64 pixels at a time in shared memory (thread q < 64 gathers
// pixel q's nine taps); warp v then takes pixels v, v + 8, ... of them, lane l the columns
// l, l + 32, l + 64, so each pixel's read of the second operand is one coalesced row, and
// every lane adds its column times the pixel's window into ONE_CHANNEL_ROWS running sums per
// column. At the end the warps' sums meet in shared memory and are added in warp order:
// deterministic.
// Grid: chunks; block 256; dynamic shared memory ONE_CHANNEL_SHARED_FLOATS; columns <= 96.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_one_channel(const float* __restrict__ src, int grid_n, int grid_h,
                                   int grid_w, int src_h, int src_w, int stride, int origin,
                                   const float* __restrict__ second, int n, int ones,
                                   int pixels_per_chunk, float* __restrict__ partial) {
    WHORL_DYNAMIC_SHARED(float, shared);
    float* windows = shared;                                          // [TILE_P][WINDOW]
    float* warp_sums = shared + ONE_CHANNEL_TILE_P * ONE_CHANNEL_WINDOW;  // [warp][ROWS][MAX_COLUMNS]
    const int pixels = grid_n * grid_h * grid_w;
    const int rows = ones == FILTER_ONES_ROW ? ONE_CHANNEL_ROWS : 9;
    const int columns = ones == FILTER_ONES_COLUMN ? n + 1 : n;
    const int begin = blockIdx.x * pixels_per_chunk;
    const int end = min(pixels, begin + pixels_per_chunk);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float acc[ONE_CHANNEL_GROUPS][ONE_CHANNEL_ROWS];
    for (int g = 0; g < ONE_CHANNEL_GROUPS; ++g)
        for (int k = 0; k < ONE_CHANNEL_ROWS; ++k) acc[g][k] = 0.0f;
    for (int p0 = begin; p0 < end; p0 += ONE_CHANNEL_TILE_P) {
        if (threadIdx.x < ONE_CHANNEL_TILE_P) {
            const int q = threadIdx.x;
            WindowOrigin o = window_origin(p0 + q, end, grid_h, grid_w, src_h, src_w, 1, stride,
                                           origin, origin);
            float* window = windows + q * ONE_CHANNEL_WINDOW;
            for (int tap = 0; tap < 9; ++tap)
                window[tap] = window_value(src, o, tap / 3, tap % 3, 0, src_h, src_w, 1);
            window[9] = (o.valid && ones == FILTER_ONES_ROW) ? 1.0f : 0.0f;
        }
        __syncthreads();
        const int tile_end = min(ONE_CHANNEL_TILE_P, end - p0);
        for (int q = warp; q < tile_end; q += ONE_CHANNEL_WARPS) {
            const float* window = windows + q * ONE_CHANNEL_WINDOW;
            const float* row = second + size_t(p0 + q) * n;
            WHORL_UNROLL
            for (int g = 0; g < ONE_CHANNEL_GROUPS; ++g) {
                const int c = lane + 32 * g;
                if (c >= columns) break;
                const float value = c < n ? row[c] : 1.0f;
                WHORL_UNROLL
                for (int k = 0; k < ONE_CHANNEL_ROWS; ++k) acc[g][k] += window[k] * value;
            }
        }
        __syncthreads();
    }
    for (int g = 0; g < ONE_CHANNEL_GROUPS; ++g)
        for (int k = 0; k < ONE_CHANNEL_ROWS; ++k)
            warp_sums[(warp * ONE_CHANNEL_ROWS + k) * ONE_CHANNEL_MAX_COLUMNS + lane + 32 * g] = acc[g][k];
    __syncthreads();
    float* out = partial + size_t(blockIdx.x) * rows * columns;
    for (int e = threadIdx.x; e < rows * columns; e += WHORL_THREADS) {
        const int k = e / columns, c = e % columns;
        float sum = 0.0f;
        for (int v = 0; v < ONE_CHANNEL_WARPS; ++v)
            sum += warp_sums[(v * ONE_CHANNEL_ROWS + k) * ONE_CHANNEL_MAX_COLUMNS + c];
        out[e] = sum;
    }
}
