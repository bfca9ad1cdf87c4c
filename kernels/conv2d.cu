// 3x3 'same' convolutions in NHWC as tiled GEMMs over gathered input windows (implicit im2col).
// (In FP32 the plain convolutions' three passes run by Winograd's F(2x2, 3x3) instead:
// conv2d_winograd.cu.)
//
// One GEMM kernel serves every pass. For each pixel p = (image, i, j) of a grid it gathers a
// window of a source tensor into a row A[p, k], k = tap * channels + channel (tap-major), with
// tap (ty, tx) reading source pixel (stride i + origin_row + ty, stride j + origin_col + tx),
// and computes out[p', n] = epilogue(sum over k of A[p, k] * W[k, n]), p' = (image,
// out_stride i + out_row, out_stride j + out_col) of the output tensor, the epilogue
// activation(bias + sum) or, with slope_at (backward-data into an activated tensor y),
// sum times activation'(y[p', n]) (epilogue_output in whorl.cuh):
//   forward:                  source x, 3x3 window, stride 1, origin -1; W = kernel [9 cin, cout]
//   forward, upsampled x:     four 2x2 "phase" convolutions of the small x (below), one per
//                             output parity, each writing every other output pixel
//   backward-data:            source dz, W = kernel flipped in space, transposed in channels
//   backward-data, upsampled: source Q = 2x2 box sums of dz (below), 3x3 window, stride 2,
//                             origin 0, W = the same flipped kernel
// The _pooled kernels (the plain forward of a convolution followed by 2x2 max pooling) also
// write pooled[p / 4, n] = the maximum of each 2x2 window of out, the grid's pixels in
// window-major order (grid_pixel in whorl.cuh) so that a window's four pixels are consecutive
// rows of a tile.
//
// Upsampled convolutions at their true arithmetic. With u = upsample2(x) and, per dimension,
// y[p] = sum over t in {-1, 0, 1} of w[t] u[p + t]:
// - forward: output 2s reads x[s - 1] (t = -1) and x[s] (t = 0, 1); output 2s + 1 reads x[s]
//   (t = -1, 0) and x[s + 1] (t = 1): a 2-tap convolution of x per output parity, its taps the
//   sums of the kernel taps that land on the same source pixel (conv2d_fold_phases_kernel):
//   4 x 4 taps instead of 4 x 9, 4/9 of the arithmetic.
// - backward: dx[s] = sum over t of w[t] (dz[2s - t] + dz[2s + 1 - t]). With the neighbour
//   sums Q[j] = dz[j - 1] + dz[j] for j = 0 .. 2H (dz zero outside the image) this is
//   dx[s] = sum over t of w[t] Q[2s + 1 - t]: a stride-2 pass over Q with the flipped kernel, at
//   the source resolution, 1/4 of the arithmetic. Likewise dw[t] = sum over s of
//   x[s] Q[2s + 1 - t], and db = sum over s of Q[2s + 1] (t = 0 covers every dz once).
//   In 2D, Q is the 2x2 box sum (upsample2_box_sums).
#include "whorl.cuh"

// Tile of the output: 128 pixels x 64 channels per block of 256 threads (128 x 128 for outputs
// of more than 64 channels, 256 x 32 for at most 32, so no half of the tile idles), K in slices
// of 16; each thread accumulates 8 pixels x 4 channels in registers (8 x 8 in the 128 x 128
// tile, twice the multiply-adds per shared-memory read and per gathered value) and gathers
// TILE_P / 16 window values per slice.
#define GEMM_TILE_P 128
#define GEMM_TILE_N 64
#define GEMM_WIDE_TILE_P 128
#define GEMM_WIDE_TILE_N 128
#define GEMM_NARROW_TILE_P 256
#define GEMM_NARROW_TILE_N 32
#define GEMM_TILE_K 16
#define GEMM_THREAD_P 8
// Resident blocks per multiprocessor the 128 x 128 tile is compiled for (at most 128
// registers a thread): with one, its stalls on the next slice's loads would idle the SM.
#define GEMM_WIDE_BLOCKS 2
// Shared memory: two stages, each a slice of the A tile stored k-major ([TILE_K][TILE_P + 4]:
// a thread reads its 8 pixels of one k as two 16-byte reads) and of the weight tile
// ([TILE_K][TILE_N]), then the tile's gather rows (2 words a pixel; window origins, 4 words,
// in the 128 x 128 tile).
#define GEMM_SHARED_FLOATS (2 * GEMM_TILE_K * (GEMM_TILE_P + 4 + GEMM_TILE_N) + 4 * GEMM_TILE_P)
#define GEMM_WIDE_SHARED_FLOATS (2 * GEMM_TILE_K * (GEMM_WIDE_TILE_P + 4 + GEMM_WIDE_TILE_N) + 4 * GEMM_WIDE_TILE_P)
#define GEMM_NARROW_SHARED_FLOATS (2 * GEMM_TILE_K * (GEMM_NARROW_TILE_P + 4 + GEMM_NARROW_TILE_N) + 4 * GEMM_NARROW_TILE_P)

// Kernel-gradient tiles: 64 rows of K x 64 columns per block (128 x 128 where 128 columns pad
// no more than 64), over 32 pixels at a time; shared memory for the two staged operands (rows
// padded to a multiple of 4 floats, so a thread reads its rows and columns as float4) and the
// 32 pixels' window origins (4 words each).
#define FILTER_TILE_K 64
#define FILTER_TILE_N 64
#define FILTER_WIDE_TILE 128
#define FILTER_TILE_P 32
#define FILTER_SHARED_FLOATS (2 * FILTER_TILE_P * (FILTER_TILE_K + 4) + 4 * FILTER_TILE_P)
#define FILTER_WIDE_SHARED_FLOATS (2 * FILTER_TILE_P * (FILTER_WIDE_TILE + 4) + 4 * FILTER_TILE_P)

// out[p', n] = epilogue_output(bias[n] + sum over k of window(p)[k] * weights[k, n]) (with
// slope_at unless Pooling), one TILE_P x TILE_N tile of it per block of 256 threads, K in
// slices of GEMM_TILE_K through two shared-memory stages: while the block multiplies one
// slice, the next one's cp.async copies (zero-filling the padding) are in flight into the other
// stage; one barrier a slice.
// Gathering: thread t copies column t % 16 of the A slice for pixel rows t / 16 + 16 m
// (m < TILE_P / 16), its tap and channel advanced without divisions; the tile's gather rows
// (GatherRow: an offset and a bit per tap inside the image) are found once, before the K loop,
// into shared memory.
// Multiplying: thread t computes pixels 8 (t / L) .. + 8, L = TILE_N / THREAD_N threads along the
// channels, and THREAD_N channels in runs of 4: 4 (t % L) .. + 4, and TILE_N / 2 further on for
// THREAD_N = 8. Per k, two 16-byte reads of A and one per run of 4 channels feed 8 THREAD_N
// multiply-adds; threads that share their pixels read them as broadcasts, and a quarter warp's
// channel reads are 128 consecutive bytes. Every output adds its products in rising k, so the
// results do not depend on the tile.
template <int TILE_P, int TILE_N, int THREAD_N, bool Pooling>
__device__ __forceinline__ void gathered_gemm_tile(
    const float* __restrict__ src, int grid_n, int grid_h, int grid_w, int src_h, int src_w,
    int src_c, int window, int stride, int origin_row, int origin_col,
    const float* __restrict__ weights, int n, const float* __restrict__ bias, int activation,
    const float* __restrict__ slope_at, float* __restrict__ out, int out_h, int out_w,
    int out_stride, int out_row, int out_col, float* __restrict__ pooled) {
    constexpr int gathers = TILE_P * GEMM_TILE_K / WHORL_THREADS;
    constexpr int weight_loads = GEMM_TILE_K * TILE_N / WHORL_THREADS;
    constexpr int pitch = TILE_P + 4;
    constexpr int lanes_n = TILE_N / THREAD_N, runs = THREAD_N / 4;
    static_assert(THREAD_N % 4 == 0 && (TILE_N / runs) % 4 == 0, "channels in runs of 4");
    WHORL_DYNAMIC_SHARED(float, shared);
    float* a_stages = shared;                                // [2][TILE_K][pitch]
    float* w_stages = shared + 2 * GEMM_TILE_K * pitch;      // [2][TILE_K][TILE_N]
    // The 128 x 128 tile gathers through window origins, bounds checked per value: the gather
    // rows' bit tests would cost it most of its margin under the 128 registers its two blocks
    // an SM allow (so it compiles without spills down to 104 registers; with them it spills at
    // 112).
    constexpr bool bit_rows = TILE_N <= GEMM_TILE_N;
    GatherRow* rows = reinterpret_cast<GatherRow*>(w_stages + 2 * GEMM_TILE_K * TILE_N);
    WindowOrigin* origins = reinterpret_cast<WindowOrigin*>(rows);
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int slices = (k_total + GEMM_TILE_K - 1) / GEMM_TILE_K;
    const int p0 = blockIdx.x * TILE_P, n0 = blockIdx.y * TILE_N;
    const int t = threadIdx.x;
    const int gather_column = t % GEMM_TILE_K, first_row_gathered = t / GEMM_TILE_K;
    const int rows_per_pass = WHORL_THREADS / GEMM_TILE_K;
    constexpr bool pooling = Pooling;
    for (int row = t; row < TILE_P; row += WHORL_THREADS) {
        if constexpr (bit_rows)
            rows[row] = gather_row(p0 + row, pixels, grid_h, grid_w, src_h, src_w, src_c, window,
                                   stride, origin_row, origin_col, pooling);
        else
            origins[row] = window_origin(p0 + row, pixels, grid_h, grid_w, src_h, src_w, src_c,
                                         stride, origin_row, origin_col, pooling);
    }
    __syncthreads();
    TapCursor cursor = tap_cursor(gather_column, src_c, window);
    const int first_column = (t % lanes_n) * 4;
    const int first_row = (t / lanes_n) * GEMM_THREAD_P;
    // A slice into a stage by cp.async, one group a slice: the window values, thread t's
    // column gather_column for pixel rows first_row_gathered + 16 m (per value one bit test and
    // one addition, the tap's bit and offset found once a slice; the padding zero-filled), and
    // the weights, column n0 + t % TILE_N for rows t / TILE_N + j 256 / TILE_N of the slice
    // (element t + 256 j of [TILE_K][TILE_N]; small, they stay in L2). No value passes through
    // a register: the 128 x 128 tile keeps its 128 for its sums and operands. Each copy's
    // destination is a constant offset from the thread's first one in the stage.
    constexpr int weight_row_step = WHORL_THREADS / TILE_N;
    static_assert(WHORL_THREADS % TILE_N == 0, "a thread copies one column of the weights");
    const int first_weight_row = t / TILE_N;
    const bool weight_column_inside = n0 + t % TILE_N < n;
    const float* weight_column = weights + n0 + t % TILE_N;
    float* const a_first = a_stages + gather_column * pitch + first_row_gathered;
    float* const w_first = w_stages + t;
    auto copy_slice = [&](int slice, int stage) {
        float* a_dst = a_first + stage * GEMM_TILE_K * pitch;
        const bool k_inside = slice * GEMM_TILE_K + gather_column < k_total;
        const unsigned tap = 1u << (cursor.ty * window + cursor.tx);
        const int tap_offset = (cursor.ty * src_w + cursor.tx) * src_c + cursor.channel;
        WHORL_UNROLL
        for (int m = 0; m < gathers; ++m) {
            const int row = first_row_gathered + m * rows_per_pass;
            if constexpr (bit_rows) {
                const GatherRow r = rows[row];
                const bool inside = k_inside && (r.taps_inside & tap);
                cp_async_4(a_dst + m * rows_per_pass, src + (inside ? r.offset + tap_offset : 0),
                           !inside);
            } else {
                const float* at = k_inside ? window_source(src, origins[row], cursor.ty, cursor.tx,
                                                           cursor.channel, src_h, src_w, src_c)
                                           : nullptr;
                cp_async_4(a_dst + m * rows_per_pass, at ? at : src, !at);
            }
        }
        advance(cursor, GEMM_TILE_K, src_c, window);
        const int k0 = slice * GEMM_TILE_K + first_weight_row;
        const float* w_src = weight_column + size_t(k0) * n;
        float* w_dst = w_first + stage * GEMM_TILE_K * TILE_N;
        WHORL_UNROLL
        for (int j = 0; j < weight_loads; ++j) {
            const bool inside = weight_column_inside && k0 + j * weight_row_step < k_total;
            const float* from = inside ? w_src + j * weight_row_step * n : weights;
            cp_async_4(w_dst + j * WHORL_THREADS, from, !inside);
        }
        cp_async_commit();
    };
    float acc[GEMM_THREAD_P][THREAD_N];
    for (int r = 0; r < GEMM_THREAD_P; ++r)
        for (int c = 0; c < THREAD_N; ++c) acc[r][c] = 0.0f;
    copy_slice(0, 0);
    for (int slice = 0; slice < slices; ++slice) {
        const int stage = slice % 2;
        // The slice has landed, and every thread is done with the other stage (it multiplied
        // the slice before): the next slice's copies fly while this one is multiplied.
        cp_async_wait<0>();
        __syncthreads();
        if (slice + 1 < slices) copy_slice(slice + 1, 1 - stage);
        const float* a_slice = a_stages + stage * GEMM_TILE_K * pitch + first_row;
        const float* w_slice = w_stages + stage * GEMM_TILE_K * TILE_N + first_column;
        WHORL_UNROLL
        for (int kk = 0; kk < GEMM_TILE_K; ++kk) {
            float a[GEMM_THREAD_P], w[THREAD_N];
            const float4 a_low = *reinterpret_cast<const float4*>(a_slice + kk * pitch);
            const float4 a_high = *reinterpret_cast<const float4*>(a_slice + kk * pitch + 4);
            a[0] = a_low.x, a[1] = a_low.y, a[2] = a_low.z, a[3] = a_low.w;
            a[4] = a_high.x, a[5] = a_high.y, a[6] = a_high.z, a[7] = a_high.w;
            WHORL_UNROLL
            for (int run = 0; run < runs; ++run) {
                const float4 quad = *reinterpret_cast<const float4*>(
                    w_slice + kk * TILE_N + run * (TILE_N / runs));
                w[4 * run] = quad.x, w[4 * run + 1] = quad.y;
                w[4 * run + 2] = quad.z, w[4 * run + 3] = quad.w;
            }
            WHORL_UNROLL
            for (int r = 0; r < GEMM_THREAD_P; ++r)
                WHORL_UNROLL
                for (int c = 0; c < THREAD_N; ++c) acc[r][c] += a[r] * w[c];
        }
    }
    // The pooling tile takes no slope_at: it runs forward passes, which have no input slope.
    const float* slope = Pooling ? nullptr : slope_at;
    WHORL_UNROLL
    for (int r = 0; r < GEMM_THREAD_P; ++r) {
        const int p = p0 + first_row + r;
        if (p >= pixels) break;
        const GridPixel at = grid_pixel(p, grid_h, grid_w, pooling);
        const int row = out_stride * at.row + out_row, col = out_stride * at.col + out_col;
        const size_t pixel = (size_t(at.image * out_h + row) * out_w + col) * n;
        WHORL_UNROLL
        for (int c = 0; c < THREAD_N; ++c) {
            const int channel = n0 + (c / 4) * (TILE_N / runs) + first_column + c % 4;
            if (channel >= n) continue;
            const float b = bias ? bias[channel] : 0.0f;
            acc[r][c] = epilogue_output(acc[r][c] + b, activation, slope, pixel + channel);
            out[pixel + channel] = acc[r][c];
        }
    }
    if (!pooling) return;
    // A thread's 8 pixels are two whole windows (first_row is a multiple of 8).
    WHORL_UNROLL
    for (int w = 0; w < GEMM_THREAD_P / 4; ++w) {
        const int p = p0 + first_row + 4 * w;
        if (p >= pixels) break;
        WHORL_UNROLL
        for (int c = 0; c < THREAD_N; ++c) {
            const int channel = n0 + (c / 4) * (TILE_N / runs) + first_column + c % 4;
            if (channel >= n) continue;
            pooled[size_t(p / 4) * n + channel] =
                first_max_of_two(first_max_of_two(acc[4 * w][c], acc[4 * w + 1][c]),
                                 first_max_of_two(acc[4 * w + 2][c], acc[4 * w + 3][c]));
        }
    }
}

// The 128 x 64 tile. Grid: (ceil(pixels / GEMM_TILE_P), ceil(n / GEMM_TILE_N)); block 256;
// dynamic shared memory GEMM_SHARED_FLOATS. Every GEMM kernel here takes `pooled`; only the
// _pooled one writes it (the others leave it null): its epilogue's extra registers would cost
// the rest occupancy.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm(WHORL_GATHERED_GEMM_PARAMS) {
    gathered_gemm_tile<GEMM_TILE_P, GEMM_TILE_N, 4, false>(WHORL_GATHERED_GEMM_ARGS, nullptr);
}

// The 128 x 64 tile pooling in its epilogue (conv2 and pool2), the grid in window-major order.
// Grid, block and shared memory as conv2d_gathered_gemm's.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_pooled(WHORL_GATHERED_GEMM_PARAMS) {
    gathered_gemm_tile<GEMM_TILE_P, GEMM_TILE_N, 4, true>(WHORL_GATHERED_GEMM_ARGS, pooled);
}

// The 128 x 128 tile, for n > 64. Grid: (ceil(pixels / GEMM_WIDE_TILE_P),
// ceil(n / GEMM_WIDE_TILE_N)); block 256; dynamic shared memory GEMM_WIDE_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS, GEMM_WIDE_BLOCKS)
conv2d_gathered_gemm_wide(WHORL_GATHERED_GEMM_PARAMS) {
    gathered_gemm_tile<GEMM_WIDE_TILE_P, GEMM_WIDE_TILE_N, 8, false>(
        WHORL_GATHERED_GEMM_ARGS, nullptr);
}

// The 256 x 32 tile, for n <= 32. Grid: (ceil(pixels / GEMM_NARROW_TILE_P), 1); block 256;
// dynamic shared memory GEMM_NARROW_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_narrow(WHORL_GATHERED_GEMM_PARAMS) {
    gathered_gemm_tile<GEMM_NARROW_TILE_P, GEMM_NARROW_TILE_N, 4, false>(
        WHORL_GATHERED_GEMM_ARGS, nullptr);
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

// phases[a, b, dy, dx, ci, co] = sum of kernel[ky, kx, ci, co] over the taps by which output
// (2r + a, 2c + b) reads source pixel (r - 1 + a + dy, c - 1 + b + dx) through a nearest x2
// upsampling: ky in {0}, {1, 2} for a = 0, dy = 0, 1 and in {0, 1}, {2} for a = 1 (kx alike).
// One thread per element; grid ceil(16 cin cout / 256), block 256.
extern "C" __global__ void conv2d_fold_phases_kernel(const float* __restrict__ kernel, int cin,
                                                     int cout, float* __restrict__ phases) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= 16 * cin * cout) return;
    int a = e / (8 * cin * cout), b = e / (4 * cin * cout) % 2;
    int dy = e / (2 * cin * cout) % 2, dx = e / (cin * cout) % 2, ci = e / cout % cin, co = e % cout;
    // first[parity][d] .. last[parity][d]: the kernel rows (columns) folded onto one tap.
    const int first[2][2] = {{0, 1}, {0, 2}}, last[2][2] = {{0, 2}, {1, 2}};
    float sum = 0.0f;
    for (int ky = first[a][dy]; ky <= last[a][dy]; ++ky)
        for (int kx = first[b][dx]; kx <= last[b][dx]; ++kx)
            sum += kernel[((ky * 3 + kx) * cin + ci) * cout + co];
    phases[e] = sum;
}

// Channels ch .. ch + 3 of the c at `at`, zeros past c: one 16-byte load with `vector` (c a
// multiple of 4 and the tensor 16-byte aligned), else a load each.
__device__ __forceinline__ float4 load_quad(const float* __restrict__ at, bool vector, int ch,
                                            int c) {
    if (vector) return *reinterpret_cast<const float4*>(at);
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k = 0; k < 4 && ch + k < c; ++k) v[k] = at[k];
    return make_float4(v[0], v[1], v[2], v[3]);
}

// Stores the channels of `v` below c as load_quad reads them.
__device__ __forceinline__ void store_quad(float* __restrict__ at, float4 v, bool vector, int ch,
                                           int c) {
    if (vector) {
        *reinterpret_cast<float4*>(at) = v;
        return;
    }
    const float values[4] = {v.x, v.y, v.z, v.w};
    for (int k = 0; k < 4 && ch + k < c; ++k) at[k] = values[k];
}

__device__ __forceinline__ void add_quad(float4& sum, float4 v) {
    sum.x += v.x;
    sum.y += v.y;
    sum.z += v.z;
    sum.w += v.w;
}

// q[image, i, j, c] = dz[i - 1, j - 1] + dz[i - 1, j] + dz[i, j - 1] + dz[i, j] (channel c, dz
// zero outside its h x w image, added in that order) for i <= h, j <= w: the 2x2 box sums the
// backward passes of an upsampled convolution read. One thread per pixel of q and quad of 4
// channels (the position found once for the 4; 16-byte loads and stores when c is a multiple
// of 4 and both tensors are 16-byte aligned); grid ceil(batch (h + 1) (w + 1) ceil(c / 4) / 256),
// block 256.
extern "C" __global__ void upsample2_box_sums(const float* __restrict__ dz, int batch, int h,
                                              int w, int c, float* __restrict__ q) {
    const int quads = (c + 3) / 4;
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * (h + 1) * (w + 1) * quads) return;
    const int ch = e % quads * 4, pixel = e / quads;
    const int j = pixel % (w + 1), i = pixel / (w + 1) % (h + 1);
    const int image = pixel / ((w + 1) * (h + 1));
    const bool vector = c % 4 == 0 && reinterpret_cast<size_t>(dz) % 16 == 0 &&
                        reinterpret_cast<size_t>(q) % 16 == 0;
    const float* plane = dz + size_t(image) * h * w * c + ch;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int row = i - 1; row <= i; ++row)
        for (int col = j - 1; col <= j; ++col)
            if (row >= 0 && col >= 0 && row < h && col < w)
                add_quad(sum, load_quad(plane + (row * w + col) * c, vector, ch, c));
    store_quad(q + size_t(pixel) * c + ch, sum, vector, ch, c);
}

// Pixels whose loads upsample2_bias_partials keeps in flight together, per thread.
#define BIAS_PARTIALS_UNROLL 8

// partial[chunk, ch] = sum over the chunk's source pixels s = (image, i, j) (pixels_per_chunk
// of the batch src_h src_w, in order) of q[image, 2i + 1, 2j + 1, ch], q upsample2_box_sums's
// of a 2 src_h x 2 src_w dz: the aligned box sums, which cover every element of dz once, so
// that sum_partials over the chunks gives an upsampled convolution's bias gradient, the sum of
// dz per channel (db = sum over s of Q[2s + 1], above).
// Thread t adds quad t % span of the channels (4 channels; span = min(ceil(c / 4), 256)) over
// pixels lane, lane + lanes, ... of the chunk (lane = t / span, lanes = 256 / span), loading
// BIAS_PARTIALS_UNROLL pixels together (a block is one chunk: its loads in flight hide the
// memory's latency) and adding them in pixel order; then the lanes' sums of a quad are added
// in lane order: deterministic. More quads than 256 take rounds.
// Grid: chunks; block 256.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
upsample2_bias_partials(const float* __restrict__ q, int batch, int src_h, int src_w, int c,
                        int pixels_per_chunk, float* __restrict__ partial) {
    __shared__ float4 lane_sums[WHORL_THREADS];
    const int quads = (c + 3) / 4;
    const int span = min(quads, WHORL_THREADS), lanes = WHORL_THREADS / span;
    const int lane = threadIdx.x / span, first = threadIdx.x % span;
    const int begin = blockIdx.x * pixels_per_chunk;
    const int end = min(batch * src_h * src_w, begin + pixels_per_chunk);
    const int q_w = 2 * src_w + 1, q_plane = (2 * src_h + 1) * q_w;
    const bool vector = c % 4 == 0 && reinterpret_cast<size_t>(q) % 16 == 0;
    for (int quad = first; quad - first < quads; quad += span) {
        const int ch = 4 * quad;
        float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (lane < lanes && quad < quads) {
            GridCursor at = grid_cursor(begin + lane, src_h, src_w);
            while (at.index < end) {
                float4 values[BIAS_PARTIALS_UNROLL];
                WHORL_UNROLL
                for (int u = 0; u < BIAS_PARTIALS_UNROLL; ++u) {
                    values[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    if (at.index >= end) continue;
                    const int pixel = at.image * q_plane + (2 * at.row + 1) * q_w + 2 * at.col + 1;
                    values[u] = load_quad(q + size_t(pixel) * c + ch, vector, ch, c);
                    advance_cursor(at, lanes, src_h, src_w);
                }
                WHORL_UNROLL
                for (int u = 0; u < BIAS_PARTIALS_UNROLL; ++u) add_quad(sum, values[u]);
            }
        }
        lane_sums[threadIdx.x] = sum;
        __syncthreads();
        if (lane == 0 && quad < quads) {
            float4 total = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (int v = 0; v < lanes; ++v) add_quad(total, lane_sums[v * span + first]);
            store_quad(partial + size_t(blockIdx.x) * c + ch, total, false, ch, c);
        }
        __syncthreads();
    }
}

// Partial products of one chunk of grid pixels: partial[chunk, k, c] = sum over its pixels p of
// window(p)[k] * second[p, c] for c < n. With ones_row, row k = K (one past the window) is all
// ones, so that row is the sum of second (a plain convolution's bias gradient, second = dz).
// One TILE x TILE tile (TILE 64 or 128) per block of 256 threads. Staging: threads t < 32 find
// the window origins of the tile's 32 pixels (the only divisions in the loop); thread t then
// stages column t % TILE of both operands for pixels t / TILE + (256 / TILE) m, its tap and
// channel fixed before the loop. Multiplying: thread t computes rows R (t / 16) .. + R and
// columns R (t % 16) .. + R of the tile, R = TILE / 16: per pixel, 2 R shared-memory reads (as
// float4) feed R^2 multiply-adds.
template <int TILE>
__device__ __forceinline__ void filter_partials_tile(
    const float* __restrict__ src, int grid_n, int grid_h, int grid_w, int src_h, int src_w,
    int src_c, int window, int stride, int origin, const float* __restrict__ second, int n,
    int ones_row, int pixels_per_chunk, float* __restrict__ partial) {
    constexpr int R = TILE / 16, PITCH = TILE + 4;
    WHORL_DYNAMIC_SHARED(float, shared);
    float* a_tile = shared;                            // [pixels][k]: window values
    float* g_tile = shared + FILTER_TILE_P * PITCH;    // [pixels][column]: second operand
    WindowOrigin* origins = reinterpret_cast<WindowOrigin*>(g_tile + FILTER_TILE_P * PITCH);
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int rows = ones_row ? k_total + 1 : k_total;
    const int k0 = blockIdx.x * TILE, n0 = blockIdx.y * TILE, chunk = blockIdx.z;
    const int begin = chunk * pixels_per_chunk;
    const int end = min(pixels, begin + pixels_per_chunk);
    const int t = threadIdx.x, first_column = (t % 16) * R, first_row = (t / 16) * R;
    const int column = t % TILE, k = k0 + column, g_column = n0 + column;
    const int tap = k / src_c, ty = tap / window, tx = tap % window, channel = k % src_c;
    const bool is_ones_row = ones_row && k == k_total;
    float acc[R][R];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < R; ++c) acc[r][c] = 0.0f;
    for (int p0 = begin; p0 < end; p0 += FILTER_TILE_P) {
        if (t < FILTER_TILE_P)
            origins[t] = window_origin(p0 + t, end, grid_h, grid_w, src_h, src_w, src_c, stride,
                                       origin, origin);
        __syncthreads();
        for (int q = t / TILE; q < FILTER_TILE_P; q += WHORL_THREADS / TILE) {
            const WindowOrigin o = origins[q];
            float value = 0.0f;
            if (k < k_total) value = window_value(src, o, ty, tx, channel, src_h, src_w, src_c);
            else if (is_ones_row && o.valid) value = 1.0f;
            a_tile[q * PITCH + column] = value;
            g_tile[q * PITCH + column] =
                o.valid && g_column < n ? second[size_t(p0 + q) * n + g_column] : 0.0f;
        }
        __syncthreads();
        WHORL_UNROLL
        for (int q = 0; q < FILTER_TILE_P; ++q) {
            float a[R], g[R];
            for (int r = 0; r < R; ++r) a[r] = a_tile[q * PITCH + first_row + r];
            for (int c = 0; c < R; ++c) g[c] = g_tile[q * PITCH + first_column + c];
            for (int r = 0; r < R; ++r)
                for (int c = 0; c < R; ++c) acc[r][c] += a[r] * g[c];
        }
        __syncthreads();
    }
    for (int r = 0; r < R; ++r) {
        const int k = k0 + first_row + r;
        for (int c = 0; c < R; ++c) {
            const int column = n0 + first_column + c;
            if (k < rows && column < n)
                partial[(size_t(chunk) * rows + k) * n + column] = acc[r][c];
        }
    }
}

// The 64 x 64 tile. Grid: (ceil(rows / FILTER_TILE_K), ceil(n / FILTER_TILE_N), chunks);
// block 256; dynamic shared memory FILTER_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials(WHORL_FILTER_PARTIALS_PARAMS) {
    filter_partials_tile<FILTER_TILE_K>(WHORL_FILTER_PARTIALS_ARGS);
}

// The 128 x 128 tile. Grid: (ceil(rows / FILTER_WIDE_TILE), ceil(n / FILTER_WIDE_TILE),
// chunks); block 256; dynamic shared memory FILTER_WIDE_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_wide(WHORL_FILTER_PARTIALS_PARAMS) {
    filter_partials_tile<FILTER_WIDE_TILE>(WHORL_FILTER_PARTIALS_ARGS);
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

// An upsampled convolution's kernel gradient from the partials of the pass over the box sums
// q (rows a * cout + co for q's window tap a = 8 - tap, columns ci): grads[tap, ci, co] = sum
// over chunks, in order, of partial[chunk, (8 - tap) cout + co, ci].
// One thread per element of grads; grid ceil(9 cin cout / 256), block 256.
extern "C" __global__ void sum_partials_upsampled(const float* __restrict__ partial, int chunks,
                                                  int cin, int cout, float* __restrict__ grads) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= 9 * cin * cout) return;
    const int tap = e / (cin * cout), ci = e / cout % cin, co = e % cout;
    const size_t at = size_t((8 - tap) * cout + co) * cin + ci;
    const size_t stride = size_t(9 * cout) * cin;
    float sum = 0.0f;
    for (int c = 0; c < chunks; ++c) sum += partial[c * stride + at];
    grads[e] = sum;
}
