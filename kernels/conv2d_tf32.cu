// The convolution GEMM of conv2d.cu on tensor cores, in TF32: the same contract as
// conv2d_gathered_gemm (a window gathered per grid pixel, tap-major K, out[p', n] =
// activation(bias + window(p) W), scattered by out_stride/out_row/out_col), with operands
// rounded to TF32 (round to nearest) and products accumulated in float32, as cuDNN and
// PyTorch run convolutions by default on Ampere and newer GPUs.
//
// Needs src_c and n multiples of 4: a 16-byte copy is then 4 channels of one tap of one pixel
// (never across a tap) or 4 adjacent output channels of W, so the tiles fill by cp.async.
// conv2-conv5 qualify in every pass; conv1 (one input channel) and conv6 (one output channel)
// stay on the CUDA-core kernel.
#include "whorl.cuh"

// Block tile: 128 pixels x 64 channels, K in slices of 16 through a 3-stage shared-memory
// pipeline; 8 warps, 4 along the pixels x 2 along the channels, each a 32 x 32 tile of 2 x 4
// mma.m16n8k8 tiles. Row pitches are padded so a warp's fragment reads hit 32 banks.
#define TF32_TILE_P 128
#define TF32_TILE_N 64
#define TF32_SLICE 16
#define TF32_STAGES 3
#define TF32_PITCH_A (TF32_SLICE + 4)
#define TF32_PITCH_B (TF32_TILE_N + 8)
#define TF32_SHARED_FLOATS (TF32_STAGES * (TF32_TILE_P * TF32_PITCH_A + TF32_SLICE * TF32_PITCH_B))
// 16-byte copies per thread per slice: of the window tile (128 x 16) and of W's (16 x 64).
#define TF32_A_COPIES (TF32_TILE_P * TF32_SLICE / 4 / WHORL_THREADS)

// The 3-stage cp.async pipeline of both kernels here: load(slice, stage) starts the copies of
// a slice into a stage of shared memory, multiply(stage) consumes one; loads run
// TF32_STAGES - 1 slices ahead of the multiplications.
template <typename Load, typename Multiply>
__device__ __forceinline__ void cp_async_pipeline(int slices, Load load, Multiply multiply) {
    for (int stage = 0; stage < TF32_STAGES - 1; ++stage) {
        if (stage < slices) load(stage, stage);
        cp_async_commit();
    }
    for (int slice = 0; slice < slices; ++slice) {
        cp_async_wait<TF32_STAGES - 2>();
        __syncthreads();
        // Every warp is past slice - 1, so its stage can be refilled.
        const int next = slice + TF32_STAGES - 1;
        if (next < slices) load(next, next % TF32_STAGES);
        cp_async_commit();
        multiply(slice % TF32_STAGES);
    }
    cp_async_wait<0>();
}

// Grid: (ceil(pixels / TF32_TILE_P), ceil(n / TF32_TILE_N)); block 256 threads; dynamic shared
// memory TF32_SHARED_FLOATS. Copying: thread t fills 4 channels at K column 4 (t % 4) of pixel
// rows t / 4 and t / 4 + 64 (their window origins computed once), and 4 channels of W at row
// t / 16, column 4 (t % 16). Multiplying: warp w computes pixels 32 (w / 2) .. + 32 x channels
// 32 (w % 2) .. + 32; per slice, each lane rounds 16 A and 16 B values and issues 16 mma.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_tf32(const float* __restrict__ src, int grid_n, int grid_h, int grid_w,
                          int src_h, int src_w, int src_c, int window, int stride, int origin_row,
                          int origin_col, const float* __restrict__ weights, int n,
                          const float* __restrict__ bias, int activation, float* __restrict__ out,
                          int out_h, int out_w, int out_stride, int out_row, int out_col) {
    WHORL_DYNAMIC_SHARED(float, shared);
    float* a_stages = shared;  // [stage][TF32_TILE_P][TF32_PITCH_A]
    float* b_stages = shared + TF32_STAGES * TF32_TILE_P * TF32_PITCH_A;  // [stage][SLICE][PITCH_B]
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int p0 = blockIdx.x * TF32_TILE_P, n0 = blockIdx.y * TF32_TILE_N;
    const int thread = threadIdx.x, lane = thread % 32, warp = thread / 32;
    const int g = lane / 4, t = lane % 4;
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;

    // This thread's copies: pixel rows and their window origins, K column, W row and column.
    const int a_column = (thread % 4) * 4, a_row = thread / 4;
    WindowOrigin origins[TF32_A_COPIES];
    WHORL_UNROLL
    for (int i = 0; i < TF32_A_COPIES; ++i)
        origins[i] = window_origin(p0 + a_row + i * (WHORL_THREADS / 4), pixels, grid_h, grid_w,
                                   src_h, src_w, src_c, stride, origin_row, origin_col);
    TapCursor cursor = tap_cursor(a_column, src_c, window);
    const int b_row = thread / 16, b_column = (thread % 16) * 4;

    // Starts copying slice `slice` into `stage`; the cursor is at its K.
    auto load_slice = [&](int slice, int stage) {
        const int k0 = slice * TF32_SLICE;
        const bool k_inside = k0 + a_column < k_total;
        WHORL_UNROLL
        for (int i = 0; i < TF32_A_COPIES; ++i) {
            const float* source = window_source(src, origins[i], cursor.ty, cursor.tx,
                                                cursor.channel, src_h, src_w, src_c);
            bool inside = k_inside && source;
            float* target = a_stages + (stage * TF32_TILE_P + a_row + i * (WHORL_THREADS / 4)) *
                                           TF32_PITCH_A + a_column;
            cp_async_16(target, inside ? source : src, !inside);
        }
        bool inside = k0 + b_row < k_total && n0 + b_column < n;
        const float* source = inside ? weights + size_t(k0 + b_row) * n + n0 + b_column : weights;
        cp_async_16(b_stages + (stage * TF32_SLICE + b_row) * TF32_PITCH_B + b_column, source,
                    !inside);
        advance(cursor, TF32_SLICE, src_c, window);
    };

    float acc[2][4][4] = {};

    auto multiply = [&](int stage) {
        const float* a_tile = a_stages + stage * TF32_TILE_P * TF32_PITCH_A;
        const float* b_tile = b_stages + stage * TF32_SLICE * TF32_PITCH_B;
        WHORL_UNROLL
        for (int ks = 0; ks < TF32_SLICE; ks += 8) {
            unsigned a[2][4], b[4][2];
            WHORL_UNROLL
            for (int mi = 0; mi < 2; ++mi) {
                const float* rows = a_tile + (warp_row + mi * 16 + g) * TF32_PITCH_A + ks + t;
                a[mi][0] = tf32_round(rows[0]);
                a[mi][1] = tf32_round(rows[8 * TF32_PITCH_A]);
                a[mi][2] = tf32_round(rows[4]);
                a[mi][3] = tf32_round(rows[8 * TF32_PITCH_A + 4]);
            }
            WHORL_UNROLL
            for (int ni = 0; ni < 4; ++ni) {
                const float* column = b_tile + (ks + t) * TF32_PITCH_B + warp_col + ni * 8 + g;
                b[ni][0] = tf32_round(column[0]);
                b[ni][1] = tf32_round(column[4 * TF32_PITCH_B]);
            }
            WHORL_UNROLL
            for (int mi = 0; mi < 2; ++mi) {
                WHORL_UNROLL
                for (int ni = 0; ni < 4; ++ni) mma_tf32_m16n8k8(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
            }
        }
    };
    cp_async_pipeline((k_total + TF32_SLICE - 1) / TF32_SLICE, load_slice, multiply);

    // Lane (g, t) holds rows g and g + 8 x columns 2t, 2t + 1 of each 16 x 8 tile.
    WHORL_UNROLL
    for (int mi = 0; mi < 2; ++mi) {
        WHORL_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int p = p0 + warp_row + mi * 16 + g + 8 * half;
            if (p >= pixels) continue;
            const int image = p / (grid_h * grid_w), within = p % (grid_h * grid_w);
            const int row = out_stride * (within / grid_w) + out_row;
            const int col = out_stride * (within % grid_w) + out_col;
            float* out_pixel = out + (size_t(image * out_h + row) * out_w + col) * n;
            WHORL_UNROLL
            for (int ni = 0; ni < 4; ++ni) {
                WHORL_UNROLL
                for (int e = 0; e < 2; ++e) {
                    const int c = n0 + warp_col + ni * 8 + 2 * t + e;
                    if (c >= n) continue;
                    const float b = bias ? bias[c] : 0.0f;
                    out_pixel[c] = activate(acc[mi][ni][2 * half + e] + b, activation);
                }
            }
        }
    }
}

// Kernel-gradient partials (conv2d_filter_partials) on tensor cores: partial[chunk, k, c] = sum
// over the chunk's grid pixels p of window(p)[k] * second[p, c], with a row (FILTER_ONES_ROW)
// or a column (FILTER_ONES_COLUMN) of ones appended, operands rounded to TF32. The pixels are
// the reduction: they run in slices of 16 through a 3-stage cp.async pipeline.
#define TF32_FILTER_ROWS 128
#define TF32_FILTER_COLUMNS 64
#define TF32_FILTER_SLICE 16
#define TF32_FILTER_PITCH_A (TF32_FILTER_ROWS + 8)
#define TF32_FILTER_PITCH_B (TF32_FILTER_COLUMNS + 8)
#define TF32_FILTER_SHARED_FLOATS (TF32_STAGES * TF32_FILTER_SLICE * (TF32_FILTER_PITCH_A + TF32_FILTER_PITCH_B))

// Where a copying thread's pixel is: its image and position in the grid, advanced by whole
// slices without divisions.
struct GridCursor {
    int pixel, image, row, col;
};

__device__ __forceinline__ void advance_pixels(GridCursor& at, int step, int grid_h, int grid_w) {
    at.pixel += step;
    at.col += step;
    while (at.col >= grid_w) {
        at.col -= grid_w;
        if (++at.row == grid_h) {
            at.row = 0;
            ++at.image;
        }
    }
}

// Grid: (ceil(rows / 128), ceil(columns / 64), chunks); block 256; dynamic shared memory
// TF32_FILTER_SHARED_FLOATS. Copying: thread t fills, for pixel t / 16 of each slice, 4 window
// values at rows 4 (t % 16) and 4 (t % 16) + 64 and 4 values of second at column 4 (t % 16);
// the ones are plain stores. Multiplying: warp w computes rows 32 (w / 2) .. + 32 x columns
// 32 (w % 2) .. + 32, as 2 x 4 mma tiles of 16 x 8.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_tf32(const float* __restrict__ src, int grid_n, int grid_h, int grid_w,
                            int src_h, int src_w, int src_c, int window, int stride, int origin,
                            const float* __restrict__ second, int n, int ones,
                            int pixels_per_chunk, float* __restrict__ partial) {
    WHORL_DYNAMIC_SHARED(float, shared);
    float* a_stages = shared;  // [stage][pixel][row k]
    float* b_stages = shared + TF32_STAGES * TF32_FILTER_SLICE * TF32_FILTER_PITCH_A;  // [stage][pixel][column]
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int rows = ones == FILTER_ONES_ROW ? k_total + 1 : k_total;
    const int columns = ones == FILTER_ONES_COLUMN ? n + 1 : n;
    const int k0 = blockIdx.x * TF32_FILTER_ROWS, n0 = blockIdx.y * TF32_FILTER_COLUMNS;
    const int chunk = blockIdx.z;
    const int begin = chunk * pixels_per_chunk, end = min(pixels, begin + pixels_per_chunk);
    const int thread = threadIdx.x, lane = thread % 32, warp = thread / 32;
    const int g = lane / 4, t = lane % 4;
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;

    // This thread's copies, for the pixel at slice offset copy_pixel: the window at rows k and
    // k + 64 (their taps and channels fixed for the block) and second at column c.
    const int copy_pixel = thread / 16, offset = (thread % 16) * 4;
    const int c = n0 + offset;
    int k[2], tap_row[2], tap_col[2], channel[2];
    WHORL_UNROLL
    for (int i = 0; i < 2; ++i) {
        k[i] = k0 + offset + 64 * i;
        int tap = k[i] / src_c;
        channel[i] = k[i] % src_c;
        tap_row[i] = tap / window + origin;
        tap_col[i] = tap % window + origin;
    }
    GridCursor at;
    at.pixel = begin + copy_pixel;
    at.image = at.pixel / (grid_h * grid_w);
    at.row = at.pixel / grid_w % grid_h;
    at.col = at.pixel % grid_w;

    auto load_slice = [&](int, int stage) {
        const bool pixel_inside = at.pixel < end;
        WHORL_UNROLL
        for (int i = 0; i < 2; ++i) {
            float* target = a_stages + (stage * TF32_FILTER_SLICE + copy_pixel) * TF32_FILTER_PITCH_A +
                            offset + 64 * i;
            if (k[i] < k_total) {
                int row = stride * at.row + tap_row[i], col = stride * at.col + tap_col[i];
                bool inside = pixel_inside && row >= 0 && col >= 0 && row < src_h && col < src_w;
                const float* source =
                    inside ? src + ((size_t(at.image) * src_h + row) * src_w + col) * src_c + channel[i]
                           : src;
                cp_async_16(target, source, !inside);
            } else {
                // Past the window: the ones row at k = K (with FILTER_ONES_ROW), zeros after it.
                bool one = pixel_inside && k[i] == k_total && ones == FILTER_ONES_ROW;
                target[0] = one ? 1.0f : 0.0f;
                target[1] = target[2] = target[3] = 0.0f;
            }
        }
        float* target = b_stages + (stage * TF32_FILTER_SLICE + copy_pixel) * TF32_FILTER_PITCH_B + offset;
        if (c < n) {
            const float* source = pixel_inside ? second + size_t(at.pixel) * n + c : second;
            cp_async_16(target, source, !pixel_inside);
        } else {
            bool one = pixel_inside && c == n && ones == FILTER_ONES_COLUMN;
            target[0] = one ? 1.0f : 0.0f;
            target[1] = target[2] = target[3] = 0.0f;
        }
        advance_pixels(at, TF32_FILTER_SLICE, grid_h, grid_w);
    };

    float acc[2][4][4] = {};
    auto multiply = [&](int stage) {
        const float* a_tile = a_stages + stage * TF32_FILTER_SLICE * TF32_FILTER_PITCH_A;
        const float* b_tile = b_stages + stage * TF32_FILTER_SLICE * TF32_FILTER_PITCH_B;
        WHORL_UNROLL
        for (int ks = 0; ks < TF32_FILTER_SLICE; ks += 8) {
            // A is [row k][pixel]: its fragment's (row, column) is (k, pixel) of the tile.
            unsigned a[2][4], b[4][2];
            WHORL_UNROLL
            for (int mi = 0; mi < 2; ++mi) {
                const float* a_pixels = a_tile + (ks + t) * TF32_FILTER_PITCH_A + warp_row + mi * 16 + g;
                a[mi][0] = tf32_round(a_pixels[0]);
                a[mi][1] = tf32_round(a_pixels[8]);
                a[mi][2] = tf32_round(a_pixels[4 * TF32_FILTER_PITCH_A]);
                a[mi][3] = tf32_round(a_pixels[4 * TF32_FILTER_PITCH_A + 8]);
            }
            WHORL_UNROLL
            for (int ni = 0; ni < 4; ++ni) {
                const float* b_pixels = b_tile + (ks + t) * TF32_FILTER_PITCH_B + warp_col + ni * 8 + g;
                b[ni][0] = tf32_round(b_pixels[0]);
                b[ni][1] = tf32_round(b_pixels[4 * TF32_FILTER_PITCH_B]);
            }
            WHORL_UNROLL
            for (int mi = 0; mi < 2; ++mi) {
                WHORL_UNROLL
                for (int ni = 0; ni < 4; ++ni) mma_tf32_m16n8k8(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
            }
        }
    };
    cp_async_pipeline((end - begin + TF32_FILTER_SLICE - 1) / TF32_FILTER_SLICE, load_slice,
                      multiply);

    // Lane (g, t) holds rows g and g + 8 x columns 2t, 2t + 1 of each 16 x 8 tile.
    WHORL_UNROLL
    for (int mi = 0; mi < 2; ++mi) {
        WHORL_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int row = k0 + warp_row + mi * 16 + g + 8 * half;
            if (row >= rows) continue;
            WHORL_UNROLL
            for (int ni = 0; ni < 4; ++ni) {
                WHORL_UNROLL
                for (int e = 0; e < 2; ++e) {
                    const int column = n0 + warp_col + ni * 8 + 2 * t + e;
                    if (column < columns)
                        partial[(size_t(chunk) * rows + row) * columns + column] = acc[mi][ni][2 * half + e];
                }
            }
        }
    }
}
