// 3x3 'same' convolutions by Winograd's minimal filtering F(2x2, 3x3) in FP32 on the CUDA
// cores: the three passes of the plain convolutions in FP32 mode, the algebra of the CPU
// engine (src/backend/cpu/winograd.rs). Each 2x2 block of outputs (a tile) is
//
//     Y = A^T [ sum over input channels c of U[c] ⊙ V[c] ] A,   U = G g G^T,   V = B^T d B
//
// over the tile's 4x4 input window d (from row 2 ti - 1, column 2 tj - 1; zeros outside the
// image) and each 3x3 kernel g: 16 GEMMs M[ξ] (tiles x cout) = V[ξ] (tiles x cin) U[ξ]
// (cin x cout), one per position ξ = 4a + b of the 4x4 transformed tile. That is 16 multiplies
// per 2x2 outputs and channel pair instead of 36: 4/9 of the direct arithmetic. In one
// dimension, for y0 = d0 g0 + d1 g1 + d2 g2 and y1 = d1 g0 + d2 g1 + d3 g2 (a correlation):
//
//     B^T d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
//     G g   = (g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2)
//     A^T m = (m0 + m1 + m2, m1 - m2 - m3)
//
// Backward-data is the 'same' convolution of dz with the kernel flipped in space and
// transposed in channels, so it is the same kernel over U of the flipped kernel.
#include "whorl.cuh"

// A block computes 32 tiles x 32 output channels, all 16 positions, over input channels in
// chunks of 8. Thread t multiplies for position t / 16: 8 tiles x 8 channels.
#define WINOGRAD_TILES 32
#define WINOGRAD_COLUMNS 32
#define WINOGRAD_CHUNK 8
// Shared memory: two stages, each V[16][CHUNK][TILE_PITCH] (tiles padded to 36 so that a
// warp's accesses of 4 tiles x 8 channels hit 32 banks) and U[16][CHUNK][COLUMNS]; then the
// windows' pixels as copied, [16][CHUNK][TILE_PITCH]. After the K loop, M[16][TILES][COLUMNS]
// in the same space. 86 KiB: one block on sm_89 (99 KiB at most), two on sm_90.
#define WINOGRAD_TILE_PITCH 36
#define WINOGRAD_TILE_GRID_FLOATS (16 * WINOGRAD_CHUNK * WINOGRAD_TILE_PITCH)
#define WINOGRAD_STAGE_FLOATS (WINOGRAD_TILE_GRID_FLOATS + 16 * WINOGRAD_CHUNK * WINOGRAD_COLUMNS)
#define WINOGRAD_SHARED_FLOATS (2 * WINOGRAD_STAGE_FLOATS + WINOGRAD_TILE_GRID_FLOATS)
// Resident blocks per multiprocessor it is compiled for (at most 128 registers a thread).
#define WINOGRAD_BLOCKS 2

// B^T d in one dimension, over values `stride` apart.
__device__ __forceinline__ void winograd_input_1d(const float* d, int stride, float* out) {
    out[0] = d[0] - d[2 * stride];
    out[stride] = d[stride] + d[2 * stride];
    out[2 * stride] = d[2 * stride] - d[stride];
    out[3 * stride] = d[stride] - d[3 * stride];
}

// v = B^T d B of the 4x4 window d whose pixel 4 dy + dx is at window[(4 dy + dx) pitch].
__device__ __forceinline__ void winograd_input_tile(const float* window, int pitch, float v[16]) {
    float d[16], half[16];
    WHORL_UNROLL
    for (int i = 0; i < 16; ++i) d[i] = window[i * pitch];
    WHORL_UNROLL
    for (int dx = 0; dx < 4; ++dx) winograd_input_1d(d + dx, 4, half + dx);
    WHORL_UNROLL
    for (int a = 0; a < 4; ++a) winograd_input_1d(half + 4 * a, 1, v + 4 * a);
}

// A^T m in one dimension: the two outputs of four products.
__device__ __forceinline__ void winograd_output_1d(float m0, float m1, float m2, float m3,
                                                   float* y) {
    y[0] = m0 + m1 + m2;
    y[1] = m1 - m2 - m3;
}

// The two-stage main loop of both Winograd kernels. copy(step, stage) issues a step's cp.async
// copies into the copying threads' staging memory and commits them; once they land,
// transform(stage) turns what each thread copied itself into a stage (so no barrier between
// its copy and its transform); multiply(stage) is the block's work on a stage. The block
// multiplies step s's stage while step s + 1 is copied, then transforms it into the other.
template <typename Copy, typename Multiply, typename Transform>
__device__ __forceinline__ void winograd_two_stages(int steps, Copy copy, Multiply multiply,
                                                    Transform transform) {
    if (steps > 0) {
        copy(0, 0);
        cp_async_wait<0>();
        transform(0);
    }
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
        const int stage = step % 2;
        const bool next = step + 1 < steps;
        if (next) copy(step + 1, 1 - stage);
        multiply(stage);
        // The other stage was last read before the barrier that closed the previous step.
        cp_async_wait<0>();
        if (next) transform(1 - stage);
        __syncthreads();
    }
}

// acc[i][j] += a[i] b[j] for 8 values of a and of b, each read from shared memory as two
// 16-byte reads: one step of a thread's 8 x 8 share of the 16 GEMMs.
__device__ __forceinline__ void multiply_add_8x8(float acc[8][8], const float* a,
                                                 const float* b) {
    const float4 a_low = *reinterpret_cast<const float4*>(a);
    const float4 a_high = *reinterpret_cast<const float4*>(a + 4);
    const float4 b_low = *reinterpret_cast<const float4*>(b);
    const float4 b_high = *reinterpret_cast<const float4*>(b + 4);
    const float av[8] = {a_low.x,  a_low.y,  a_low.z,  a_low.w,
                         a_high.x, a_high.y, a_high.z, a_high.w};
    const float bv[8] = {b_low.x,  b_low.y,  b_low.z,  b_low.w,
                         b_high.x, b_high.y, b_high.z, b_high.w};
    WHORL_UNROLL
    for (int i = 0; i < 8; ++i)
        WHORL_UNROLL
        for (int j = 0; j < 8; ++j) acc[i][j] += av[i] * bv[j];
}

// out[i * stride + j] = acc[i][j], each row as two 16-byte writes.
__device__ __forceinline__ void store_8x8(float* out, int stride, const float acc[8][8]) {
    WHORL_UNROLL
    for (int i = 0; i < 8; ++i) {
        *reinterpret_cast<float4*>(out + i * stride) =
            make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
        *reinterpret_cast<float4*>(out + i * stride + 4) =
            make_float4(acc[i][4], acc[i][5], acc[i][6], acc[i][7]);
    }
}

// u[ξ, r, c] = (G g G^T)[ξ] for the kernel g that multiplies input channel r into output
// channel c of the pass: kernel[ky, kx, r, c] forward, and with `flip` (backward-data, whose
// input is dz) kernel[2 - ky, 2 - kx, c, r]; zero in the padding (r >= the pass's input
// channels or c >= its outputs), so the main kernel reads whole chunks and column blocks.
// One thread per (r, c) of the rows x columns padded matrix; grid ceil(rows columns / 256),
// block 256.
extern "C" __global__ void conv2d_winograd_kernel_transform(const float* __restrict__ kernel,
                                                            int cin, int cout, int flip,
                                                            int rows, int columns,
                                                            float* __restrict__ u) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= rows * columns) return;
    const int r = e / columns, c = e % columns;
    const int pass_in = flip ? cout : cin, pass_out = flip ? cin : cout;
    float g[3][3];
    for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
            const int tap = flip ? (2 - ky) * 3 + 2 - kx : ky * 3 + kx;
            const int ci = flip ? c : r, co = flip ? r : c;
            g[ky][kx] = r < pass_in && c < pass_out ? kernel[(tap * cin + ci) * cout + co] : 0.0f;
        }
    // G g G^T: G over the rows, then over the columns.
    float half[4][3];
    for (int kx = 0; kx < 3; ++kx) {
        half[0][kx] = g[0][kx];
        half[1][kx] = 0.5f * (g[0][kx] + g[1][kx] + g[2][kx]);
        half[2][kx] = 0.5f * (g[0][kx] - g[1][kx] + g[2][kx]);
        half[3][kx] = g[2][kx];
    }
    for (int a = 0; a < 4; ++a) {
        const float row[4] = {half[a][0], 0.5f * (half[a][0] + half[a][1] + half[a][2]),
                              0.5f * (half[a][0] - half[a][1] + half[a][2]), half[a][2]};
        for (int b = 0; b < 4; ++b) u[((4 * a + b) * rows + r) * columns + c] = row[b];
    }
}

// out = activation(bias + the convolution of src with the kernel whose transform is u), and
// with `pooled` also pooled = its 2x2 max pooling (an even output: a tile is a pooling window);
// with `slope_at` (backward-data, no bias), the convolution times activation'(slope_at).
// Grid: ceil(n / WINOGRAD_COLUMNS) x ceil(tiles / WINOGRAD_TILES) blocks in x, column blocks
// fastest (the blocks that read the same tiles run together and share them in L2); block 256;
// dynamic shared memory WINOGRAD_SHARED_FLOATS. `rows` and `columns` are u's padded sizes:
// src_c rounded up to a chunk, n to a column block.
//
// Per chunk of 8 input channels, double-buffered: thread t copies the window of tile t / 8 at
// channel t % 8 with cp.async, 16 floats (its offset and a bit per window pixel inside the
// image found once, before the K loop; 8 threads copy a pixel's 8 channels, 32 consecutive
// bytes), and four 16-byte pieces of U's chunk. The next chunk's copies are in flight while
// the block multiplies: per channel, thread t reads 8 tiles and 8 channels of its position
// (four 16-byte reads) for 64 multiply-adds. Then each thread transforms the window it copied
// itself (so no barrier between its copy and its transform) into the other stage's V. Every M
// adds its products in rising channel order. Last, the block stores M and each thread turns
// 4 tiles x 1 channel of it into outputs (A^T M A, then epilogue_output: bias and activation,
// or backward-data's activation slope at slope_at): a warp writes 32 consecutive channels of a
// pixel.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS, WINOGRAD_BLOCKS)
conv2d_winograd(const float* __restrict__ src, int batch, int h, int w, int src_c,
                const float* __restrict__ u, int rows, int columns, int n,
                const float* __restrict__ bias, int activation, const float* __restrict__ slope_at,
                float* __restrict__ out, float* __restrict__ pooled) {
    WHORL_DYNAMIC_SHARED(float, shared);
    static_assert(16 * WINOGRAD_TILES * WINOGRAD_COLUMNS <= 2 * WINOGRAD_STAGE_FLOATS,
                  "M fits in the two stages");
    const int tiles_h = (h + 1) / 2, tiles_w = (w + 1) / 2;
    const int tiles = batch * tiles_h * tiles_w;
    const int column_blocks = columns / WINOGRAD_COLUMNS;
    const int n0 = (blockIdx.x % column_blocks) * WINOGRAD_COLUMNS;
    const int tile0 = (blockIdx.x / column_blocks) * WINOGRAD_TILES;
    const int t = threadIdx.x;
    const int chunks = rows / WINOGRAD_CHUNK;

    // The window this thread transforms: its first pixel's offset, and bit 4 dy + dx for each
    // pixel inside the image.
    const int my_tile = t / WINOGRAD_CHUNK, my_channel = t % WINOGRAD_CHUNK;
    int window_offset = 0;
    unsigned inside = 0;
    if (tile0 + my_tile < tiles) {
        const GridCursor at = grid_cursor(tile0 + my_tile, tiles_h, tiles_w);
        const int row = 2 * at.row - 1, col = 2 * at.col - 1;
        window_offset = ((at.image * h + row) * w + col) * src_c + my_channel;
        for (int dy = 0; dy < 4; ++dy)
            for (int dx = 0; dx < 4; ++dx)
                if (row + dy >= 0 && row + dy < h && col + dx >= 0 && col + dx < w)
                    inside |= 1u << (4 * dy + dx);
    }
    // The window's 16 pixels at this thread's channel of a chunk into shared memory, pixel
    // 4 dy + dx at [pixel][channel][tile]; zeros outside the image and past the channels.
    float* window =
        shared + 2 * WINOGRAD_STAGE_FLOATS + my_channel * WINOGRAD_TILE_PITCH + my_tile;
    constexpr int window_pixel_pitch = WINOGRAD_CHUNK * WINOGRAD_TILE_PITCH;
    auto copy_window = [&](int chunk) {
        const bool channel_inside = chunk * WINOGRAD_CHUNK + my_channel < src_c;
        const int offset = window_offset + chunk * WINOGRAD_CHUNK;
        WHORL_UNROLL
        for (int i = 0; i < 16; ++i) {
            const bool copied = channel_inside && (inside >> i & 1u);
            cp_async_4(window + i * window_pixel_pitch,
                       copied ? src + offset + ((i / 4) * w + i % 4) * src_c : src, !copied);
        }
    };
    // V = B^T d B of the window this thread copied (landed) into a stage, position ξ at
    // [ξ][channel][tile].
    auto store_transformed = [&](int stage) {
        float v[16];
        winograd_input_tile(window, window_pixel_pitch, v);
        float* v_stage = shared + stage * WINOGRAD_STAGE_FLOATS;
        WHORL_UNROLL
        for (int xi = 0; xi < 16; ++xi)
            v_stage[(xi * WINOGRAD_CHUNK + my_channel) * WINOGRAD_TILE_PITCH + my_tile] = v[xi];
    };
    // U's chunk: 16 x CHUNK rows of COLUMNS floats in 16-byte pieces, piece t + 256 j for
    // thread t: row t / 8 + 32 j (position t / 64 + 4 j, channel t / 8 % 8), quarter t % 8.
    constexpr int pieces_per_row = WINOGRAD_COLUMNS / 4;
    constexpr int rows_per_pass = WHORL_THREADS / pieces_per_row;
    constexpr int positions_per_pass = rows_per_pass / WINOGRAD_CHUNK;
    const int u_row = t / pieces_per_row, u_quarter = t % pieces_per_row;
    const size_t u_first_row = size_t(u_row / WINOGRAD_CHUNK) * rows + u_row % WINOGRAD_CHUNK;
    const float* u_source = u + u_first_row * columns + n0 + 4 * u_quarter;
    const size_t u_pass_stride = size_t(positions_per_pass) * rows * columns;
    auto copy_u = [&](int chunk, int stage) {
        float* u_stage = shared + stage * WINOGRAD_STAGE_FLOATS + WINOGRAD_TILE_GRID_FLOATS +
                         u_row * WINOGRAD_COLUMNS + 4 * u_quarter;
        const float* from = u_source + size_t(chunk) * WINOGRAD_CHUNK * columns;
        WHORL_UNROLL
        for (int j = 0; j < 16 * WINOGRAD_CHUNK / rows_per_pass; ++j)
            cp_async_16(u_stage + j * rows_per_pass * WINOGRAD_COLUMNS, from + j * u_pass_stride,
                        false);
        cp_async_commit();
    };

    const int xi = t / 16, first_tile = (t % 16) / 4 * 8;
    const int first_column = (t % 4) * 8;
    float acc[8][8];
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    auto copy = [&](int chunk, int stage) {
        copy_window(chunk);
        copy_u(chunk, stage);
    };
    auto multiply = [&](int stage) {
        const float* v_stage = shared + stage * WINOGRAD_STAGE_FLOATS;
        const float* u_stage = v_stage + WINOGRAD_TILE_GRID_FLOATS;
        WHORL_UNROLL
        for (int c = 0; c < WINOGRAD_CHUNK; ++c) {
            const float* v_row = v_stage + (xi * WINOGRAD_CHUNK + c) * WINOGRAD_TILE_PITCH;
            const float* u_row = u_stage + (xi * WINOGRAD_CHUNK + c) * WINOGRAD_COLUMNS;
            multiply_add_8x8(acc, v_row + first_tile, u_row + first_column);
        }
    };
    winograd_two_stages(chunks, copy, multiply, store_transformed);

    // M[ξ][tile][column] over the stages (every thread is past its last read of them).
    float* m = shared;
    store_8x8(m + (xi * WINOGRAD_TILES + first_tile) * WINOGRAD_COLUMNS + first_column,
              WINOGRAD_COLUMNS, acc);
    __syncthreads();
    const int column = t % WINOGRAD_COLUMNS, channel = n0 + column;
    if (channel >= n) return;
    const float b = bias ? bias[channel] : 0.0f;
    for (int k = t / WINOGRAD_COLUMNS; k < WINOGRAD_TILES; k += WHORL_THREADS / WINOGRAD_COLUMNS) {
        const int tile = tile0 + k;
        if (tile >= tiles) break;
        float products[16], half[8], y[4];
        WHORL_UNROLL
        for (int p = 0; p < 16; ++p)
            products[p] = m[(p * WINOGRAD_TILES + k) * WINOGRAD_COLUMNS + column];
        // A^T over the rows (half[4 i + b] for output row i), then over the columns (y[2 i + j]).
        WHORL_UNROLL
        for (int col = 0; col < 4; ++col) {
            float pair[2];
            winograd_output_1d(products[col], products[4 + col], products[8 + col],
                               products[12 + col], pair);
            half[col] = pair[0];
            half[4 + col] = pair[1];
        }
        winograd_output_1d(half[0], half[1], half[2], half[3], y);
        winograd_output_1d(half[4], half[5], half[6], half[7], y + 2);
        const GridCursor at = grid_cursor(tile, tiles_h, tiles_w);
        WHORL_UNROLL
        for (int q = 0; q < 4; ++q) {
            const int row = 2 * at.row + q / 2, col = 2 * at.col + q % 2;
            const bool inside = row < h && col < w;
            const size_t element = (size_t(at.image * h + row) * w + col) * n + channel;
            y[q] = epilogue_output(y[q] + b, activation, inside ? slope_at : nullptr, element);
            if (inside) out[element] = y[q];
        }
        if (pooled && 2 * at.row + 1 < h && 2 * at.col + 1 < w)
            pooled[(size_t(at.image * (h / 2) + at.row) * (w / 2) + at.col) * n + channel] =
                first_max_of_two(first_max_of_two(y[0], y[1]), first_max_of_two(y[2], y[3]));
    }
}

// ---- The kernel gradient ----
//
// dW = G^T [ sum over tiles of (B^T d B) ⊙ (A dz A^T) ] G, with d a tile's 4x4 input window and
// dz its 2x2 block of the output's gradient (zero outside the image): the transpose of the
// forward algebra. In one dimension, for any g: sum over i of dz_i y_i = dz^T A^T [(G g) ⊙
// (B^T d)] = g^T G^T [(A dz) ⊙ (B^T d)], and it is also sum over k of g_k (sum over i of
// dz_i d_{i+k}) = g^T dW, so dW = G^T [(A dz) ⊙ (B^T d)], with
//
//     A dz   = (z0, z0 + z1, z0 - z1, -z1)
//     G^T u  = (u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3)
//
// So the kernel gradient is 16 GEMMs too, Ũ[ξ] (cin x cout) = sum over tiles of V[ξ][tile]^T
// Z[ξ][tile], Z = A dz A^T, reduced over chunks of tiles in a fixed order and turned into dW by
// conv2d_winograd_filter_gradient. The bias gradient, the sum of dz, is Z[5] (A's row 1 is
// (1, 1)) summed over tiles.
#define WINOGRAD_FILTER_CHANNELS 32
#define WINOGRAD_FILTER_STEP 8
// Shared memory: two stages, each V and Z of a step ([16][STEP][CHANNELS] each); then the
// windows as copied ([16][STEP][CHANNELS]) and dz's 2x2 blocks ([4][STEP][CHANNELS]). 84 KiB.
#define WINOGRAD_FILTER_GRID_FLOATS (16 * WINOGRAD_FILTER_STEP * WINOGRAD_FILTER_CHANNELS)
#define WINOGRAD_FILTER_DZ_FLOATS (4 * WINOGRAD_FILTER_STEP * WINOGRAD_FILTER_CHANNELS)
#define WINOGRAD_FILTER_SHARED_FLOATS (5 * WINOGRAD_FILTER_GRID_FLOATS + WINOGRAD_FILTER_DZ_FLOATS)

// A dz in one dimension, into values `stride` apart.
__device__ __forceinline__ void winograd_gradient_1d(float z0, float z1, float* out, int stride) {
    out[0] = z0;
    out[stride] = z0 + z1;
    out[2 * stride] = z0 - z1;
    out[3 * stride] = -z1;
}

// G^T u in one dimension, over values `stride` apart: three kernel taps of four products.
__device__ __forceinline__ void winograd_filter_1d(const float* u, int stride, float* out) {
    const float sum = 0.5f * (u[stride] + u[2 * stride]);
    out[0] = u[0] + sum;
    out[1] = 0.5f * (u[stride] - u[2 * stride]);
    out[2] = sum + u[3 * stride];
}

// partial[chunk, ξ, ci, co] = Ũ[ξ][ci][co] over the chunk's tiles, and (blocks of the first
// input-channel block) bias_partial[chunk, co] = the sum of dz over them. rows and columns are
// cin and cout rounded up to whole blocks of channels. Grid: ceil(cin / 32) ceil(cout / 32)
// blocks in x, input-channel blocks fastest, chunks in y; block 256; dynamic shared memory
// WINOGRAD_FILTER_SHARED_FLOATS; tiles_per_chunk a multiple of WINOGRAD_FILTER_STEP.
//
// Per step of 8 tiles, double-buffered as the forward kernel: thread t copies with cp.async the
// window of tile t / 32 at input channel t % 32 (a warp copies 32 consecutive channels of a
// pixel) and dz's 2x2 block of the same tile at output channel t % 32, and after the block's
// multiply transforms what it copied into V and Z of the other stage. Multiplying: thread t
// computes position t / 16 for 8 input x 8 output channels: per tile, four 16-byte reads for 64
// multiply-adds. Every sum adds its tiles in rising order.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS, WINOGRAD_BLOCKS)
conv2d_winograd_filter_partials(const float* __restrict__ x, int batch, int h, int w, int cin,
                                const float* __restrict__ dz, int cout, int tiles_per_chunk,
                                float* __restrict__ partial, float* __restrict__ bias_partial) {
    WHORL_DYNAMIC_SHARED(float, shared);
    constexpr int grid_floats = WINOGRAD_FILTER_GRID_FLOATS;
    constexpr int step_tiles = WINOGRAD_FILTER_STEP, channels = WINOGRAD_FILTER_CHANNELS;
    const int tiles_h = (h + 1) / 2, tiles_w = (w + 1) / 2;
    const int tiles = batch * tiles_h * tiles_w;
    const int ci_blocks = (cin + channels - 1) / channels;
    const int co_blocks = (cout + channels - 1) / channels;
    const int rows = ci_blocks * channels, columns = co_blocks * channels;
    const int ci0 = (blockIdx.x % ci_blocks) * channels;
    const int co0 = (blockIdx.x / ci_blocks) * channels;
    const int chunk = blockIdx.y;
    const int begin = chunk * tiles_per_chunk;
    const int end = min(tiles, begin + tiles_per_chunk);
    const int steps = (end - begin + step_tiles - 1) / step_tiles;
    const int t = threadIdx.x;

    // Copying and transforming: tile `mine` of each step, channel `lane` (input for the window,
    // output for dz), from shared slot [pixel][mine][lane].
    const int mine = t / channels, lane = t % channels;
    const bool ci_inside = ci0 + lane < cin, co_inside = co0 + lane < cout;
    float* window = shared + 4 * grid_floats + mine * channels + lane;
    float* dz_block = window + grid_floats;
    constexpr int pixel_pitch = step_tiles * channels;
    GridCursor at = grid_cursor(begin + mine, tiles_h, tiles_w);
    auto copy_step = [&](int, int) {
        const int row = 2 * at.row, col = 2 * at.col;
        const bool valid = at.index < end;
        const int pixel = at.image * h * w;
        WHORL_UNROLL
        for (int i = 0; i < 16; ++i) {
            const int r = row - 1 + i / 4, c = col - 1 + i % 4;
            const bool copied = valid && ci_inside && r >= 0 && r < h && c >= 0 && c < w;
            const int at_x = (pixel + r * w + c) * cin + ci0 + lane;
            cp_async_4(window + i * pixel_pitch, x + (copied ? at_x : 0), !copied);
        }
        WHORL_UNROLL
        for (int i = 0; i < 4; ++i) {
            const int r = row + i / 2, c = col + i % 2;
            const bool copied = valid && co_inside && r < h && c < w;
            const int at_dz = (pixel + r * w + c) * cout + co0 + lane;
            cp_async_4(dz_block + i * pixel_pitch, dz + (copied ? at_dz : 0), !copied);
        }
        cp_async_commit();
        advance_cursor(at, step_tiles, tiles_h, tiles_w);
    };
    // V = B^T d B and Z = A dz A^T of what this thread copied (landed) into a stage, position ξ
    // at [ξ][mine][lane]; the bias sums take Z[5].
    float bias_sum = 0.0f;
    auto store_transformed = [&](int stage) {
        float v[16], z[16], z_rows[8];
        winograd_input_tile(window, pixel_pitch, v);
        const float z00 = dz_block[0], z01 = dz_block[pixel_pitch];
        const float z10 = dz_block[2 * pixel_pitch], z11 = dz_block[3 * pixel_pitch];
        winograd_gradient_1d(z00, z10, z_rows, 2);
        winograd_gradient_1d(z01, z11, z_rows + 1, 2);
        WHORL_UNROLL
        for (int a = 0; a < 4; ++a)
            winograd_gradient_1d(z_rows[2 * a], z_rows[2 * a + 1], z + 4 * a, 1);
        bias_sum += z[5];
        float* v_stage = shared + stage * 2 * grid_floats + mine * channels + lane;
        float* z_stage = v_stage + grid_floats;
        WHORL_UNROLL
        for (int xi = 0; xi < 16; ++xi) {
            v_stage[xi * pixel_pitch] = v[xi];
            z_stage[xi * pixel_pitch] = z[xi];
        }
    };

    const int xi = t / 16, first_ci = (t % 16) / 4 * 8, first_co = (t % 4) * 8;
    float acc[8][8];
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
    auto multiply = [&](int stage) {
        const float* v_stage = shared + stage * 2 * grid_floats + xi * pixel_pitch;
        const float* z_stage = v_stage + grid_floats;
        WHORL_UNROLL
        for (int s = 0; s < step_tiles; ++s) {
            multiply_add_8x8(acc, v_stage + s * channels + first_ci,
                             z_stage + s * channels + first_co);
        }
    };
    winograd_two_stages(steps, copy_step, multiply, store_transformed);

    store_8x8(partial + ((size_t(chunk) * 16 + xi) * rows + ci0 + first_ci) * columns + co0 +
                  first_co,
              columns, acc);
    if (ci0 != 0) return;
    // The bias sums of the step's 8 tile slots, added in slot order (shared memory is free:
    // the loop ended with a barrier).
    shared[t] = bias_sum;
    __syncthreads();
    if (mine != 0) return;
    float sum = 0.0f;
    for (int s = 0; s < step_tiles; ++s) sum += shared[s * channels + lane];
    bias_partial[size_t(chunk) * columns + co0 + lane] = sum;
}

// grads[tap, ci, co] = (G^T Ũ G)[tap] with Ũ[ξ] = the sum over chunks, in order, of
// partial[chunk, ξ, ci, co]; grads[9 cin cout + co] (the bias) = the sum over chunks, in order,
// of bias_partial[chunk, co]. rows and columns as conv2d_winograd_filter_partials's. One thread
// per (ci, co), then one per co of the bias; grid ceil((cin + 1) cout / 256), block 256.
extern "C" __global__ void conv2d_winograd_filter_gradient(const float* __restrict__ partial,
                                                           const float* __restrict__ bias_partial,
                                                           int chunks, int cin, int cout,
                                                           int rows, int columns,
                                                           float* __restrict__ grads) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (cin + 1) * cout) return;
    if (e >= cin * cout) {
        const int co = e - cin * cout;
        float sum = 0.0f;
        for (int c = 0; c < chunks; ++c) sum += bias_partial[size_t(c) * columns + co];
        grads[9 * cin * cout + co] = sum;
        return;
    }
    const int ci = e / cout, co = e % cout;
    float u[16];
    for (int p = 0; p < 16; ++p) {
        float sum = 0.0f;
        for (int c = 0; c < chunks; ++c)
            sum += partial[((size_t(c) * 16 + p) * rows + ci) * columns + co];
        u[p] = sum;
    }
    // G^T over the rows (half[4 ky + b]), then over the columns.
    float half[12], taps[9];
    for (int b = 0; b < 4; ++b) {
        float column[3];
        winograd_filter_1d(u + b, 4, column);
        for (int ky = 0; ky < 3; ++ky) half[4 * ky + b] = column[ky];
    }
    for (int ky = 0; ky < 3; ++ky) winograd_filter_1d(half + 4 * ky, 1, taps + 3 * ky);
    for (int tap = 0; tap < 9; ++tap) grads[(tap * cin + ci) * cout + co] = taps[tap];
}
