// Convolutions with one input channel (conv1) or one output channel (conv6) as direct kernels.
// As tiled GEMMs they would be GEMMs of depth 9 or width 1: tiles of 64 or 128 channels doing
// one useful channel's work. Here every thread does useful work, reads are coalesced across
// the warp, and the passes run at the speed of the memory they must read.
#include "whorl.cuh"

// conv2d_one_input_channel: output channels per thread, and consecutive pixels of a row per
// thread (the nine inputs of each are shared with its neighbours, from registers).
#define ONE_INPUT_CHANNELS 4
#define ONE_INPUT_RUN 8

// conv2d_pooled_filter_partials_one_channel: pooled pixels whose 4x4 input patches a block
// stages at a time (one per thread), the floats of a staged patch (16, padded to 20 so that a
// quarter warp's 16-byte stores hit distinct banks), pooled pixels whose rows of d_pooled a warp
// loads together (with 8, ptxas spills part of the prefetched patch around the sigmoid's
// reciprocal slow-path calls), output channels per block (one per lane) and the shared memory:
// the staged patches, then, in the same memory, one set of ONE_CHANNEL_ROWS sums per warp and
// lane for the block's final, fixed-order reduction.
#define POOLED_TILE WHORL_THREADS
#define POOLED_PATCH 20
#define POOLED_UNROLL 4
#define POOLED_CHANNELS 32
#define POOLED_SHARED_FLOATS (POOLED_TILE * POOLED_PATCH)

// conv2d_filter_partials_one_channel: pixels whose windows a block stages at a time (one per
// thread), pixels whose second-operand rows a warp loads together, the most columns (channels
// of the second operand) a thread covers in steps of 32, the running sums per column (9 taps
// and the ones row), and the shared memory: the staged windows (those 10 values each, padded
// to 12), then, in the same memory, one set of sums per warp for the block's final,
// fixed-order reduction.
#define ONE_CHANNEL_TILE_P WHORL_THREADS
#define ONE_CHANNEL_UNROLL 8
#define ONE_CHANNEL_ROWS 10
#define ONE_CHANNEL_WINDOW 12
#define ONE_CHANNEL_GROUPS 3
#define ONE_CHANNEL_MAX_COLUMNS (32 * ONE_CHANNEL_GROUPS)
#define ONE_CHANNEL_WARPS (WHORL_THREADS / 32)
#define ONE_CHANNEL_SUMS (ONE_CHANNEL_WARPS * ONE_CHANNEL_ROWS * ONE_CHANNEL_MAX_COLUMNS)
#define ONE_CHANNEL_SHARED_FLOATS ONE_CHANNEL_SUMS

// conv2d_upsampled_one_output_channel: resident blocks per multiprocessor it is compiled for
// (80 registers a thread; the shared memory allows 5 on an H100, 2 on sm_89), source cells
// across a block's strip, cell rows it walks down (a third of conv5's 112 rows at 224 x 224:
// 768 blocks at batch 128, about two whole waves of 3 blocks an SM on an H100's 132 SMs, and
// 2 rows of 40 read twice), source pixels a staged row holds (the strip
// and one neighbour each side), channels a step stages (a chunk: each lane multiplies half of
// them), stages of the copy pipeline, floats per pixel of a row of products (16, padded to 17
// so that the outputs' reads spread over the banks), a stage's and a row of products' floats,
// the pixels between a thread's copies of a row, and the shared memory: the stages, then three
// rows of products. Then the pixels of a row each warp multiplies and a thread's copies of it.
#define ONE_OUTPUT_BLOCKS 3
#define ONE_OUTPUT_STRIP 56
#define ONE_OUTPUT_ROWS 38
#define ONE_OUTPUT_PIXELS (ONE_OUTPUT_STRIP + 2)
#define ONE_OUTPUT_CHUNK 64
#define ONE_OUTPUT_STAGES 2
#define ONE_OUTPUT_PRODUCTS 17
#define ONE_OUTPUT_STAGE_FLOATS (ONE_OUTPUT_PIXELS * ONE_OUTPUT_CHUNK)
#define ONE_OUTPUT_ROW_FLOATS (ONE_OUTPUT_PIXELS * ONE_OUTPUT_PRODUCTS)
#define ONE_OUTPUT_COPY_STEP (WHORL_THREADS / (ONE_OUTPUT_CHUNK / 4))
#define ONE_OUTPUT_SHARED_FLOATS (ONE_OUTPUT_STAGES * ONE_OUTPUT_STAGE_FLOATS + 3 * ONE_OUTPUT_ROW_FLOATS)
constexpr int ONE_OUTPUT_WARP_PIXELS =
    (ONE_OUTPUT_PIXELS + ONE_CHANNEL_WARPS - 1) / ONE_CHANNEL_WARPS;
constexpr int ONE_OUTPUT_COPIES =
    (ONE_OUTPUT_PIXELS + ONE_OUTPUT_COPY_STEP - 1) / ONE_OUTPUT_COPY_STEP;
static_assert(4 * ONE_OUTPUT_STRIP <= WHORL_THREADS, "a thread per output of a cell row");

// conv2d_upsampled_one_output_channel_backward: resident blocks per multiprocessor it is
// compiled for (a memory-bound pass: 24 warps keep more loads of x in flight), the floats of a
// staged window (a source pixel's 9 box sums of dz, padded to 12 so that it is three 16-byte
// reads and a quarter warp's 16-byte stores hit distinct banks), source pixels whose rows of x a warp loads together, the
// channels per lane in a pass over the chunk (lane, lane + 32), the channels of a pass, and the
// shared memory: each warp's 32 staged windows, then, in the same memory, one set of sums per
// warp (9 per channel of the pass and the bias's) for the block's final, fixed-order reduction.
#define UPSAMPLED_BACKWARD_BLOCKS 3
#define UPSAMPLED_BACKWARD_WINDOW 12
#define UPSAMPLED_BACKWARD_UNROLL 4
#define UPSAMPLED_BACKWARD_GROUPS 2
#define UPSAMPLED_BACKWARD_CHANNELS (32 * UPSAMPLED_BACKWARD_GROUPS)
#define UPSAMPLED_BACKWARD_WARP_SUMS (9 * UPSAMPLED_BACKWARD_CHANNELS + 1)
#define UPSAMPLED_BACKWARD_SHARED_FLOATS (ONE_CHANNEL_WARPS * UPSAMPLED_BACKWARD_WARP_SUMS)

// The block's total of one running sum: element `e` of each warp's `per_warp` sums in shared
// memory, added in warp order, so that a block's partials are the same bits on every run. The
// kernel gradients below end with it, after a __syncthreads().
__device__ __forceinline__ float warps_total(const float* warp_sums, int per_warp, int e) {
    float sum = 0.0f;
    for (int v = 0; v < ONE_CHANNEL_WARPS; ++v) sum += warp_sums[v * per_warp + e];
    return sum;
}

// A thread's copies of a staged row (ONE_OUTPUT_PIXELS pixels t0 - 1 .. of a source row, a
// chunk of ONE_OUTPUT_CHUNK channels each): one quad of channels (16 bytes; four floats apart
// unless Quads, cin a multiple of 4) of every ONE_OUTPUT_COPY_STEP-th pixel. Where each starts
// in a source row (its column times cin plus the quad's first channel), whether its column is
// in the image, and where the quad goes in a stage are the same for every row and chunk.
struct RowCopies {
    int offset[ONE_OUTPUT_COPIES];
    bool inside[ONE_OUTPUT_COPIES];
    bool last;  // whether the last copy's pixel exists (the others' always do)
    int quad;
};

__device__ __forceinline__ RowCopies row_copies(int t0, int src_w, int cin) {
    static_assert((ONE_OUTPUT_COPIES - 1) * ONE_OUTPUT_COPY_STEP < ONE_OUTPUT_PIXELS,
                  "only the last copy's pixel may be missing");
    RowCopies copies;
    copies.quad = threadIdx.x % (ONE_OUTPUT_CHUNK / 4);
    WHORL_UNROLL
    for (int n = 0; n < ONE_OUTPUT_COPIES; ++n) {
        const int m = threadIdx.x / (ONE_OUTPUT_CHUNK / 4) + n * ONE_OUTPUT_COPY_STEP;
        const int col = t0 - 1 + m;
        copies.inside[n] = col >= 0 && col < src_w;
        copies.offset[n] = col * cin + 4 * copies.quad;
        copies.last = m < ONE_OUTPUT_PIXELS;  // kept from the last copy
    }
    return copies;
}

// Copies the chunk's channels of source row `row` (of one image's plane of src_h rows of src_w
// pixels of cin channels) into a stage, zeros outside the image and past cin.
template <bool Quads>
__device__ __forceinline__ void stage_source_row(float* stage, const RowCopies& copies,
                                                 const float* __restrict__ plane, int row,
                                                 int chunk, int src_h, int src_w, int cin) {
    const int c = chunk * ONE_OUTPUT_CHUNK + 4 * copies.quad;
    const bool row_inside = row >= 0 && row < src_h;
    // An aligned address in the tensor, which zero-filling copies name and do not read.
    const float* source = plane + size_t(row_inside ? row : 0) * src_w * cin +
                          chunk * ONE_OUTPUT_CHUNK;
    float* dst = stage + threadIdx.x / (ONE_OUTPUT_CHUNK / 4) * ONE_OUTPUT_CHUNK + 4 * copies.quad;
    WHORL_UNROLL
    for (int n = 0; n < ONE_OUTPUT_COPIES; ++n, dst += ONE_OUTPUT_COPY_STEP * ONE_OUTPUT_CHUNK) {
        if (n == ONE_OUTPUT_COPIES - 1 && !copies.last) break;
        const bool inside = row_inside && copies.inside[n];
        if (Quads) {
            const bool copied = inside && c < cin;
            cp_async_16(dst, copied ? source + copies.offset[n] : source, !copied);
            continue;
        }
        WHORL_UNROLL
        for (int e = 0; e < 4; ++e) {
            const bool copied = inside && c + e < cin;
            cp_async_4(dst + e, copied ? source + copies.offset[n] + e : source, !copied);
        }
    }
}

// y[image, 2s + a, 2t + b] = activation(bias + sum over dy, dx in {0, 1} and channels ci of
// phases[a, b, dy, dx, ci] x[image, s - 1 + a + dy, t - 1 + b + dx, ci]): a 3x3 convolution
// with one output channel of upsample2(x), as the four 2x2 phase convolutions of x (conv2d.cu
// derives them; conv2d_fold_phases_kernel folds the kernel, cout = 1). Each source pixel
// (r, c) enters 16 of those sums, once per tap (a, b, dy, dx), so it is computed as
//   P[r, c, tap] = sum over ci of phases[tap, ci] x[r, c, ci]   (a 1 x cin by cin x 16 product)
//   z[2s + a, 2t + b] = sum over dy, dx of P[s - 1 + a + dy, t - 1 + b + dx, (a, b, dy, dx)],
// and every value of x is read once from memory and multiplied 16 times from shared memory.
// A block takes ONE_OUTPUT_ROWS cell rows (s0 ..) of a strip of ONE_OUTPUT_STRIP cells
// (t0 ..) of one image and walks down the source rows s0 - 1 .. s0 + ONE_OUTPUT_ROWS: each step
// copies the next row's chunk of channels (cp.async, two stages) while the warps multiply this
// one: lane (tap j, half h) keeps the phase kernel's 32 values of tap j for the channel quads
// 2q + h of the chunk in registers and adds, for each of its warp's pixels, those channels
// times x (one 16-byte shared read gives 4 FMAs; the two halves read neighbouring quads, one
// wavefront), and the halves' sums make P. Three rows of P are kept; once row r is done, thread
// (a, u) of the cell row r - 1 adds its output's four products and writes it (2 ONE_OUTPUT_STRIP
// consecutive floats of an output row per a). Sums are in a fixed order: the same bits on
// every run.
// Scored (the model's output in training, conv2d_upsampled_one_output_channel_scored): each
// thread also compares its outputs with the target, writes dz = dL/dz of L = mse(y, target)
// over `len` values (mse_backward's 2 (y - target) / len times activation_backward's slope,
// the same bits as those two kernels), and the block adds its threads' squared errors in a
// fixed order into partials[block] (dynamic shared memory: ONE_CHANNEL_WARPS floats more).
template <bool Scored, bool Quads>
__device__ __forceinline__ void upsampled_one_output(
    const float* __restrict__ x, int src_h, int src_w, int cin,
    const float* __restrict__ phases, const float* __restrict__ bias, int activation,
    float* __restrict__ y, int len, const float* __restrict__ target, float* __restrict__ dz,
    float* __restrict__ partials) {
    WHORL_DYNAMIC_SHARED(float, shared);
    float* products = shared + ONE_OUTPUT_STAGES * ONE_OUTPUT_STAGE_FLOATS;  // 3 rows
    const int strips = (src_w + ONE_OUTPUT_STRIP - 1) / ONE_OUTPUT_STRIP;
    const int segments = (src_h + ONE_OUTPUT_ROWS - 1) / ONE_OUTPUT_ROWS;
    // The block's image, row segment and strip: a point of a batch of segments x strips grids.
    const GridCursor block = grid_cursor(blockIdx.x, segments, strips);
    const int s0 = block.row * ONE_OUTPUT_ROWS, t0 = block.col * ONE_OUTPUT_STRIP;
    const int rows = min(ONE_OUTPUT_ROWS, src_h - s0) + 2;  // source rows s0 - 1 ..
    const int chunks = (cin + ONE_OUTPUT_CHUNK - 1) / ONE_OUTPUT_CHUNK;
    const float* plane = x + size_t(block.image) * src_h * src_w * cin;
    const int warp = threadIdx.x / 32, tap = threadIdx.x % 16, half = threadIdx.x / 16 % 2;
    // Output thread (a, u): output row 2s + a, columns 2 t0 + u; cell t0 + u / 2, column b.
    const int a = threadIdx.x / (2 * ONE_OUTPUT_STRIP), u = threadIdx.x % (2 * ONE_OUTPUT_STRIP);
    const int b = u % 2;
    const bool writes = a < 2 && t0 + u / 2 < src_w;
    const float b0 = bias ? bias[0] : 0.0f;
    float squared = 0.0f;  // Scored: this thread's squared errors

    float weights[ONE_OUTPUT_CHUNK / 8][4];  // channels 8 q + 4 half + e of the chunk
    float sums[ONE_OUTPUT_WARP_PIXELS];      // pixels warp + ONE_CHANNEL_WARPS i of the row
    // Whether this warp's last pixel exists (the others always do).
    const bool last_pixel =
        warp + ONE_CHANNEL_WARPS * (ONE_OUTPUT_WARP_PIXELS - 1) < ONE_OUTPUT_PIXELS;
    static_assert(ONE_CHANNEL_WARPS * (ONE_OUTPUT_WARP_PIXELS - 1) < ONE_OUTPUT_PIXELS,
                  "only the last pixel of a warp may be missing");
    const RowCopies copies = row_copies(t0, src_w, cin);
    stage_source_row<Quads>(shared, copies, plane, s0 - 1, 0, src_h, src_w, cin);
    cp_async_commit();
    int row = 0, chunk = 0;  // this step's row (source row s0 - 1 + row) and chunk
    for (int step = 0; step < rows * chunks; ++step) {
        const int next_row = chunk + 1 == chunks ? row + 1 : row;
        const int next_chunk = chunk + 1 == chunks ? 0 : chunk + 1;
        float* next_stage = shared + (step + 1) % ONE_OUTPUT_STAGES * ONE_OUTPUT_STAGE_FLOATS;
        if (next_row < rows)
            stage_source_row<Quads>(next_stage, copies, plane, s0 - 1 + next_row, next_chunk,
                                    src_h, src_w, cin);
        cp_async_commit();
        if (chunks > 1 || step == 0) {
            WHORL_UNROLL
            for (int q = 0; q < ONE_OUTPUT_CHUNK / 8; ++q)
                WHORL_UNROLL
                for (int e = 0; e < 4; ++e) {
                    const int c = chunk * ONE_OUTPUT_CHUNK + 8 * q + 4 * half + e;
                    weights[q][e] = c < cin ? phases[tap * cin + c] : 0.0f;
                }
        }
        if (chunk == 0) {
            WHORL_UNROLL
            for (int i = 0; i < ONE_OUTPUT_WARP_PIXELS; ++i) sums[i] = 0.0f;
        }
        cp_async_wait<ONE_OUTPUT_STAGES - 1>();
        __syncthreads();
        const float* stage = shared + step % ONE_OUTPUT_STAGES * ONE_OUTPUT_STAGE_FLOATS + 4 * half;
        WHORL_UNROLL
        for (int q = 0; q < ONE_OUTPUT_CHUNK / 8; ++q)
            WHORL_UNROLL
            for (int i = 0; i < ONE_OUTPUT_WARP_PIXELS; ++i) {
                const int m = warp + ONE_CHANNEL_WARPS * i;
                if (i == ONE_OUTPUT_WARP_PIXELS - 1 && !last_pixel) continue;
                const float4 v =
                    *reinterpret_cast<const float4*>(stage + m * ONE_OUTPUT_CHUNK + 8 * q);
                sums[i] = fmaf(weights[q][0], v.x, sums[i]);
                sums[i] = fmaf(weights[q][1], v.y, sums[i]);
                sums[i] = fmaf(weights[q][2], v.z, sums[i]);
                sums[i] = fmaf(weights[q][3], v.w, sums[i]);
            }
        if (chunk + 1 == chunks) {
            // P of this row: half 0's sum plus half 1's, stored by the lanes of half 0.
            float* product_row = products + row % 3 * ONE_OUTPUT_ROW_FLOATS;
            WHORL_UNROLL
            for (int i = 0; i < ONE_OUTPUT_WARP_PIXELS; ++i) {
                const float total = sums[i] + __shfl_down_sync(0xffffffffu, sums[i], 16);
                const int m = warp + ONE_CHANNEL_WARPS * i;
                if (half == 0 && (i < ONE_OUTPUT_WARP_PIXELS - 1 || last_pixel))
                    product_row[m * ONE_OUTPUT_PRODUCTS + tap] = total;
            }
        }
        __syncthreads();
        if (chunk + 1 == chunks && row >= 2 && writes) {
            // Cell row s = s0 + row - 2 reads product rows row - 2 + a + dy.
            const int s = s0 + row - 2;
            float z = 0.0f;
            WHORL_UNROLL
            for (int dy = 0; dy < 2; ++dy)
                WHORL_UNROLL
                for (int dx = 0; dx < 2; ++dx) {
                    const float* product_row =
                        products + (row - 2 + a + dy) % 3 * ONE_OUTPUT_ROW_FLOATS;
                    z += product_row[(u / 2 + b + dx) * ONE_OUTPUT_PRODUCTS +
                                     ((a * 2 + b) * 2 + dy) * 2 + dx];
                }
            const size_t at =
                (size_t(block.image) * 2 * src_h + 2 * s + a) * 2 * src_w + 2 * t0 + u;
            const float value = activate(z + b0, activation);
            y[at] = value;
            if (Scored) {
                const float error = value - target[at];
                dz[at] = 2.0f * error / float(len) * activation_slope(value, activation);
                squared += error * error;
            }
        }
        row = next_row;
        chunk = next_chunk;
    }
    if (!Scored) return;
    float* warp_sums = shared + ONE_OUTPUT_SHARED_FLOATS;
    for (int offset = 16; offset > 0; offset /= 2)
        squared += __shfl_down_sync(0xffffffffu, squared, offset);
    if (threadIdx.x % 32 == 0) warp_sums[warp] = squared;
    __syncthreads();
    if (threadIdx.x == 0) partials[blockIdx.x] = warps_total(warp_sums, 1, 0);
}

// Grid batch ceil(src_h / ONE_OUTPUT_ROWS) ceil(src_w / ONE_OUTPUT_STRIP); block 256; dynamic
// shared memory ONE_OUTPUT_SHARED_FLOATS floats.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS, ONE_OUTPUT_BLOCKS)
conv2d_upsampled_one_output_channel(const float* __restrict__ x, int src_h, int src_w, int cin,
                                    const float* __restrict__ phases,
                                    const float* __restrict__ bias, int activation,
                                    float* __restrict__ y) {
    if (cin % 4 == 0)
        upsampled_one_output<false, true>(x, src_h, src_w, cin, phases, bias, activation, y, 0,
                                          nullptr, nullptr, nullptr);
    else
        upsampled_one_output<false, false>(x, src_h, src_w, cin, phases, bias, activation, y, 0,
                                           nullptr, nullptr, nullptr);
}

// The same, scored against `target` ([batch, 2 src_h, 2 src_w], len values): also dz and one
// partial sum of squared errors per block (mse_finish adds them). Dynamic shared memory
// ONE_OUTPUT_SHARED_FLOATS + ONE_CHANNEL_WARPS floats.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS, ONE_OUTPUT_BLOCKS)
conv2d_upsampled_one_output_channel_scored(const float* __restrict__ x, int src_h, int src_w,
                                           int cin, const float* __restrict__ phases,
                                           const float* __restrict__ bias, int activation,
                                           float* __restrict__ y, int len,
                                           const float* __restrict__ target,
                                           float* __restrict__ dz, float* __restrict__ partials) {
    if (cin % 4 == 0)
        upsampled_one_output<true, true>(x, src_h, src_w, cin, phases, bias, activation, y, len,
                                         target, dz, partials);
    else
        upsampled_one_output<true, false>(x, src_h, src_w, cin, phases, bias, activation, y, len,
                                          target, dz, partials);
}

// The one place that says how a one-channel convolution's z (the output before its activation)
// is summed, so that every kernel computing z gets the same bits: conv2d_one_input_channel,
// conv2d_one_input_channel_pooled and conv2d_pooled_filter_partials_one_channel, whose backward
// pass recomputes the forward's z to find the same maxima. For output pixel p and channel co:
//   z = bias[co] (0 without a bias); then for tap t = 0 .. 8 in order (t = 3 ty + tx, ty major,
//   tx minor): z = one_input_tap(z, kernel[t, co], x[p + (ty - 1, tx - 1)]), 0 outside the
//   image, every tap applied, those in the zero padding too. The callers keep this order for
//   each output, whatever order they visit the outputs in.
__device__ __forceinline__ float one_input_tap(float z, float weight, float value) {
    return fmaf(weight, value, z);
}

// The 2x2 max pooling of a window of four activations in row-major order ((0, 0), (0, 1),
// (1, 0), (1, 1)): the first maximum (a later value replaces it only when strictly greater, as
// pool.cu's first_max). Returns its value; `at` gets its position, 0 .. 3.
__device__ __forceinline__ float first_max_of_four(float y0, float y1, float y2, float y3,
                                                   int& at) {
    float best = y0;
    at = 0;
    if (y1 > best) best = y1, at = 1;
    if (y2 > best) best = y2, at = 2;
    if (y3 > best) best = y3, at = 3;
    return best;
}

// one_input_channel's taps for one run: the (Rows + 2) x (ONE_INPUT_RUN + 2) inputs around
// pixels (i0 .. i0 + Rows - 1, j0 .. j0 + 7) of a plane, 0 outside it, times the group's
// weights, into the run's sums, each output's taps in one_input_tap's order (input row
// i0 - 1 + m is tap row ty = m - a of output row a: rising ty, then rising tx). With Checked
// false the whole neighbourhood is inside the plane and the reads are not checked.
template <int Rows, bool Checked>
__device__ __forceinline__ void accumulate_pixels(
    const float* __restrict__ plane, int i0, int j0, int h, int w,
    const float (&weights)[9][ONE_INPUT_CHANNELS],
    float (&sums)[Rows][ONE_INPUT_RUN][ONE_INPUT_CHANNELS]) {
    WHORL_UNROLL
    for (int m = 0; m < Rows + 2; ++m) {
        const int row = i0 + m - 1;
        const bool row_inside = !Checked || (row >= 0 && row < h);
        float values[ONE_INPUT_RUN + 2];  // columns j0 - 1 .. j0 + 8
        WHORL_UNROLL
        for (int n = 0; n < ONE_INPUT_RUN + 2; ++n) {
            const int col = j0 - 1 + n;
            values[n] =
                (!Checked || (row_inside && col >= 0 && col < w)) ? plane[row * w + col] : 0.0f;
        }
        WHORL_UNROLL
        for (int a = 0; a < Rows; ++a) {
            const int ty = m - a;
            if (ty < 0 || ty > 2) continue;
            WHORL_UNROLL
            for (int r = 0; r < ONE_INPUT_RUN; ++r)
                WHORL_UNROLL
                for (int tx = 0; tx < 3; ++tx)
                    WHORL_UNROLL
                    for (int c = 0; c < ONE_INPUT_CHANNELS; ++c)
                        sums[a][r][c] =
                            one_input_tap(sums[a][r][c], weights[ty * 3 + tx][c], values[r + tx]);
        }
    }
}

// conv2d_one_input_channel (Pooled false) and conv2d_one_input_channel_pooled (Pooled true): one
// thread per run of ONE_INPUT_RUN columns of Rows = 1 or 2 rows and group of 4 channels.
template <bool Pooled>
__device__ __forceinline__ void one_input_channel(const float* __restrict__ x, int batch, int h,
                                                  int w, const float* __restrict__ kernel,
                                                  int cout, const float* __restrict__ bias,
                                                  int activation, float* __restrict__ y) {
    constexpr int Rows = Pooled ? 2 : 1;
    const int groups = (cout + ONE_INPUT_CHANNELS - 1) / ONE_INPUT_CHANNELS;
    const int padded = groups * ONE_INPUT_CHANNELS;
    WHORL_DYNAMIC_SHARED(float, taps);  // [ty][tx][co], padded channels
    for (int tap = 0; tap < 9; ++tap)
        for (int co = threadIdx.x; co < padded; co += WHORL_THREADS)
            taps[tap * padded + co] = co < cout ? kernel[tap * cout + co] : 0.0f;
    __syncthreads();
    const int runs_per_row = (w + ONE_INPUT_RUN - 1) / ONE_INPUT_RUN;
    const int bands = h / Rows;  // bands of Rows rows per image
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * bands * runs_per_row * groups) return;
    const int co0 = e % groups * ONE_INPUT_CHANNELS, run = e / groups;
    const int band = run / runs_per_row;  // image * bands + band in the image: the output row
    const int i0 = band % bands * Rows, j0 = run % runs_per_row * ONE_INPUT_RUN;
    const float* plane = x + size_t(band / bands) * h * w;
    float weights[9][ONE_INPUT_CHANNELS];
    WHORL_UNROLL
    for (int tap = 0; tap < 9; ++tap) {
        const float4 quad = *reinterpret_cast<const float4*>(taps + tap * padded + co0);
        weights[tap][0] = quad.x;
        weights[tap][1] = quad.y;
        weights[tap][2] = quad.z;
        weights[tap][3] = quad.w;
    }
    float sums[Rows][ONE_INPUT_RUN][ONE_INPUT_CHANNELS];
    WHORL_UNROLL
    for (int c = 0; c < ONE_INPUT_CHANNELS; ++c) {
        const float start = (bias && co0 + c < cout) ? bias[co0 + c] : 0.0f;
        WHORL_UNROLL
        for (int a = 0; a < Rows; ++a)
            WHORL_UNROLL
            for (int r = 0; r < ONE_INPUT_RUN; ++r) sums[a][r][c] = start;
    }
    const bool inside = i0 >= 1 && i0 + Rows < h && j0 >= 1 && j0 + ONE_INPUT_RUN < w;
    if (inside)
        accumulate_pixels<Rows, false>(plane, i0, j0, h, w, weights, sums);
    else
        accumulate_pixels<Rows, true>(plane, i0, j0, h, w, weights, sums);
    // The run's ONE_INPUT_RUN pixels, or the ONE_INPUT_RUN / 2 pooled pixels of its 2x2
    // windows, in output row `band` (w / Rows pixels wide).
    const bool vector = cout % ONE_INPUT_CHANNELS == 0 && reinterpret_cast<size_t>(y) % 16 == 0;
    WHORL_UNROLL
    for (int s = 0; s < ONE_INPUT_RUN / Rows; ++s) {
        if (j0 + Rows * s >= w) break;
        float* out = y + (size_t(band) * (w / Rows) + j0 / Rows + s) * cout + co0;
        float results[ONE_INPUT_CHANNELS];
        WHORL_UNROLL
        for (int c = 0; c < ONE_INPUT_CHANNELS; ++c) {
            if constexpr (Pooled) {
                int at;
                results[c] = first_max_of_four(activate(sums[0][2 * s][c], activation),
                                               activate(sums[0][2 * s + 1][c], activation),
                                               activate(sums[1][2 * s][c], activation),
                                               activate(sums[1][2 * s + 1][c], activation), at);
            } else {
                results[c] = activate(sums[0][s][c], activation);
            }
        }
        if (vector) {
            *reinterpret_cast<float4*>(out) =
                make_float4(results[0], results[1], results[2], results[3]);
        } else {
            WHORL_UNROLL
            for (int c = 0; c < ONE_INPUT_CHANNELS; ++c)
                if (co0 + c < cout) out[c] = results[c];
        }
    }
}

// y[p, co] = activation(bias[co] + sum over taps (ty, tx) of kernel[ty, tx, 0, co]
// x[p + (ty - 1, tx - 1)]): a 3x3 'same' convolution of a one-channel input.
// One thread per run of ONE_INPUT_RUN pixels (i, j0 .. j0 + 7) of a row and group of 4
// consecutive channels: it keeps its group's 36 taps in registers (nine 16-byte shared reads
// from a copy padded to whole groups), reads the 3 x 10 inputs around the run once (the threads
// of one run read the same inputs, as broadcasts) and does the run's 288 FMAs from registers,
// each output's in one_input_tap's order. A warp's stores cover 4 runs' whole 128-byte rows of
// 32 channels (16 bytes a thread when cout is a multiple of 4).
// Grid ceil(runs ceil(cout / 4) / 256), runs = batch h ceil(w / 8); block 256; dynamic shared
// memory 9 ceil(cout / 4) 4 floats (the kernel, zero-padded to whole groups).
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_one_input_channel(const float* __restrict__ x, int batch, int h, int w,
                         const float* __restrict__ kernel, int cout,
                         const float* __restrict__ bias, int activation,
                         float* __restrict__ y) {
    one_input_channel<false>(x, batch, h, w, kernel, cout, bias, activation, y);
}

// pooled[image, s, t, co] = the first maximum (row-major) of activation(z) over the 2x2 window
// (2s .. 2s + 1, 2t .. 2t + 1), z as conv2d_one_input_channel's (h and w even): conv1 and the
// max pooling after it, without storing the full-resolution output.
// One thread per run of ONE_INPUT_RUN columns (j0 .. j0 + 7) of two rows (2s, 2s + 1) and group
// of 4 consecutive channels: its 36 taps in registers as conv2d_one_input_channel's, the 4 x 10
// inputs around the run read once, its 576 FMAs from registers (each output's in one_input_tap's
// order, which conv2d_pooled_filter_partials_one_channel repeats), bias and activation, then the
// first maximum of each of its 4 windows (first_max_of_four): 4 pooled pixels x 4 channels
// written, 16 bytes a pixel when cout is a multiple of 4. A run reaching past the width (w not a
// multiple of 8) writes only its windows inside the image.
// Grid ceil(runs ceil(cout / 4) / 256), runs = batch (h / 2) ceil(w / 8); block 256; dynamic
// shared memory 9 ceil(cout / 4) 4 floats (the kernel, zero-padded to whole groups).
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_one_input_channel_pooled(const float* __restrict__ x, int batch, int h, int w,
                                const float* __restrict__ kernel, int cout,
                                const float* __restrict__ bias, int activation,
                                float* __restrict__ pooled) {
    one_input_channel<true>(x, batch, h, w, kernel, cout, bias, activation, pooled);
}

// conv2d_filter_partials (conv2d.cu) for a one-channel source: the same partials, the same
// layout, the same sum kernels after it, when the window has 9 values: partial[chunk, k, c] =
// sum over the chunk's pixels p of window(p)[k] second[p, c] for k < 9 and, with ones_row, the
// sum of second[p, c] at k = 9 (conv1: x's windows, dz the second operand; conv6: the windows
// of dz's box sums, x the second operand, no ones row).
// The block stages the windows of 256 pixels at a time in shared memory, one per thread (each
// thread reads the next tile's window into registers while the block works on this one); warp
// v then takes pixels 32v .. 32v + 31 of them, 8 at a time: lane l loads columns l, l + 32,
// l + 64 of the 8 pixels' rows of the second operand together (coalesced rows, 8 to 24 loads
// in flight), then adds each column times the pixel's window (three 16-byte broadcast reads)
// into ONE_CHANNEL_ROWS running sums per column, pixels in order. At the end the warps' sums
// meet in shared memory and are added in warp order: deterministic.
// Grid: chunks; block 256; dynamic shared memory ONE_CHANNEL_SHARED_FLOATS; n <= 96.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_one_channel(const float* __restrict__ src, int grid_n, int grid_h,
                                   int grid_w, int src_h, int src_w, int stride, int origin,
                                   const float* __restrict__ second, int n, int ones_row,
                                   int pixels_per_chunk, float* __restrict__ partial) {
    static_assert(ONE_CHANNEL_TILE_P * ONE_CHANNEL_WINDOW <= ONE_CHANNEL_SHARED_FLOATS,
                  "the staged windows fit in the shared memory of the sums");
    WHORL_DYNAMIC_SHARED(float, shared);
    float* windows = shared;    // [TILE_P][WINDOW], while the chunk is read
    float* warp_sums = shared;  // [warp][ROWS][MAX_COLUMNS], at the end
    const int pixels = grid_n * grid_h * grid_w;
    const int rows = ones_row ? ONE_CHANNEL_ROWS : 9;
    const int begin = blockIdx.x * pixels_per_chunk;
    const int end = min(pixels, begin + pixels_per_chunk);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // This thread's pixel of the tile at p0: its window (zeros past the chunk's end).
    float next[ONE_CHANNEL_WINDOW];
    auto gather = [&](int p0) {
        WindowOrigin o = window_origin(p0 + threadIdx.x, end, grid_h, grid_w, src_h, src_w, 1,
                                       stride, origin, origin);
        WHORL_UNROLL
        for (int tap = 0; tap < 9; ++tap)
            next[tap] = window_value(src, o, tap / 3, tap % 3, 0, src_h, src_w, 1);
        next[9] = (o.valid && ones_row) ? 1.0f : 0.0f;
        next[10] = next[11] = 0.0f;
    };
    // This lane's columns that the second operand has (a lane past them adds zeros).
    bool reads[ONE_CHANNEL_GROUPS];
    float acc[ONE_CHANNEL_GROUPS][ONE_CHANNEL_ROWS];
    WHORL_UNROLL
    for (int g = 0; g < ONE_CHANNEL_GROUPS; ++g) {
        reads[g] = lane + 32 * g < n;
        WHORL_UNROLL
        for (int k = 0; k < ONE_CHANNEL_ROWS; ++k) acc[g][k] = 0.0f;
    }
    if (begin < end) gather(begin);
    for (int p0 = begin; p0 < end; p0 += ONE_CHANNEL_TILE_P) {
        __syncthreads();  // the previous tile's windows are no longer read
        float4* window = reinterpret_cast<float4*>(windows + threadIdx.x * ONE_CHANNEL_WINDOW);
        WHORL_UNROLL
        for (int i = 0; i < ONE_CHANNEL_WINDOW / 4; ++i)
            window[i] = make_float4(next[4 * i], next[4 * i + 1], next[4 * i + 2], next[4 * i + 3]);
        __syncthreads();
        if (p0 + ONE_CHANNEL_TILE_P < end) gather(p0 + ONE_CHANNEL_TILE_P);
        const int first = warp * 32, last = min(first + 32, end - p0);
        for (int q0 = first; q0 < last; q0 += ONE_CHANNEL_UNROLL) {
            float values[ONE_CHANNEL_UNROLL][ONE_CHANNEL_GROUPS];
            const float* rows = second + size_t(p0 + q0) * n + lane;
            WHORL_UNROLL
            for (int u = 0; u < ONE_CHANNEL_UNROLL; ++u)
                WHORL_UNROLL
                for (int g = 0; g < ONE_CHANNEL_GROUPS; ++g)
                    values[u][g] = (q0 + u < last && reads[g]) ? rows[u * n + 32 * g] : 0.0f;
            WHORL_UNROLL
            for (int u = 0; u < ONE_CHANNEL_UNROLL; ++u) {
                const float4* quads =
                    reinterpret_cast<const float4*>(windows + (q0 + u) * ONE_CHANNEL_WINDOW);
                const float4 w0 = quads[0], w1 = quads[1], w2 = quads[2];
                const float window[ONE_CHANNEL_ROWS] = {w0.x, w0.y, w0.z, w0.w, w1.x,
                                                        w1.y, w1.z, w1.w, w2.x, w2.y};
                // Groups past the columns are skipped by the whole warp; a lane past them in
                // the last group adds zeros.
                WHORL_UNROLL
                for (int g = 0; g < ONE_CHANNEL_GROUPS; ++g) {
                    if (32 * g >= n) break;
                    WHORL_UNROLL
                    for (int k = 0; k < ONE_CHANNEL_ROWS; ++k)
                        acc[g][k] += window[k] * values[u][g];
                }
            }
        }
    }
    __syncthreads();  // the windows' memory becomes the warps' sums
    for (int g = 0; g < ONE_CHANNEL_GROUPS; ++g)
        for (int k = 0; k < ONE_CHANNEL_ROWS; ++k)
            warp_sums[(warp * ONE_CHANNEL_ROWS + k) * ONE_CHANNEL_MAX_COLUMNS + lane + 32 * g] = acc[g][k];
    __syncthreads();
    float* out = partial + size_t(blockIdx.x) * rows * n;
    for (int e = threadIdx.x; e < rows * n; e += WHORL_THREADS) {
        const int k = e / n, c = e % n;
        out[e] = warps_total(warp_sums, ONE_CHANNEL_ROWS * ONE_CHANNEL_MAX_COLUMNS,
                             k * ONE_CHANNEL_MAX_COLUMNS + c);
    }
}

// The kernel and bias gradients of conv2d_one_input_channel_pooled, as partials in the layout of
// conv2d_filter_partials_one_channel with a ones row (ONE_CHANNEL_ROWS rows x cout columns per
// chunk, so that sum_partials follows with count 10 cout):
//   partial[chunk, t, co] = sum over the chunk's pooled pixels q of window(m(q, co))[t] g(q, co)
//   for the 9 taps t, and the sum of g(q, co) at t = 9,
// where m(q, co) is the first maximum of y = activation(z) in q's 2x2 window, z recomputed from
// x exactly as the forward computes it (one_input_tap's order, first_max_of_four: the same
// bits, so the same maximum), window(m) the 3x3 inputs around m (0 outside the image) and
// g(q, co) = d_pooled[q, co] activation'(y at m). Reads only x and d_pooled.
// Lane l of every warp is channel 32 blockIdx.y + l (a lane past cout adds zeros): it keeps its
// channel's 9 taps and bias in registers. The block stages the 4x4 input patches (rows
// 2s - 1 .. 2s + 2, columns 2t - 1 .. 2t + 2) of 256 pooled pixels at a time in shared memory,
// one per thread (each thread reads the next tile's patch into registers while the block works
// on this one); warp v then takes pooled pixels 32v .. 32v + 31 of them, 4 at a time: a
// coalesced load of the 4 pixels' d_pooled rows, then per pixel four 16-byte broadcast reads of
// its patch, the window's 4 z (36 FMAs), their activations and first maximum, and the maximum's
// window times g into ONE_CHANNEL_ROWS running sums, pixels in order. At the end the warps' sums
// meet in shared memory and are added in warp order: deterministic, no atomics.
// The activation is a template parameter, so that its code (and the sigmoid's slow paths) is
// not branched over for each of a window's four outputs.
template <int Activation>
__device__ __forceinline__ void pooled_filter_partials_one_channel(
    const float* __restrict__ x, int batch, int h, int w, const float* __restrict__ kernel,
    int cout, const float* __restrict__ bias, const float* __restrict__ d_pooled,
    int pixels_per_chunk, float* __restrict__ partial) {
    static_assert(POOLED_CHANNELS == 32, "a lane per channel");
    static_assert(ONE_CHANNEL_WARPS * ONE_CHANNEL_ROWS * POOLED_CHANNELS <= POOLED_SHARED_FLOATS,
                  "the warps' sums fit in the shared memory of the staged patches");
    WHORL_DYNAMIC_SHARED(float, shared);
    float* patches = shared;    // [TILE][PATCH], while the chunk is read
    float* warp_sums = shared;  // [warp][ROWS][CHANNELS], at the end
    const int pooled_h = h / 2, pooled_w = w / 2;
    const int pixels = batch * pooled_h * pooled_w;
    const int begin = blockIdx.x * pixels_per_chunk;
    const int end = min(pixels, begin + pixels_per_chunk);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int co = blockIdx.y * POOLED_CHANNELS + lane;
    const bool exists = co < cout;
    // A lane past the channels computes with channel cout - 1's taps and adds g = 0.
    const int taken = min(co, cout - 1);
    float weights[9];
    WHORL_UNROLL
    for (int t = 0; t < 9; ++t) weights[t] = kernel[t * cout + taken];
    const float start = bias ? bias[taken] : 0.0f;
    // This thread's pooled pixel of the tile at p0: its 4x4 patch (zeros past the chunk's end).
    float next[16];
    auto gather = [&](int p0) {
        const int q = p0 + threadIdx.x;
        const int image = q / (pooled_h * pooled_w), within = q % (pooled_h * pooled_w);
        const int row0 = 2 * (within / pooled_w) - 1, col0 = 2 * (within % pooled_w) - 1;
        const float* plane = x + size_t(image) * h * w;
        WHORL_UNROLL
        for (int r = 0; r < 4; ++r)
            WHORL_UNROLL
            for (int c = 0; c < 4; ++c) {
                const int row = row0 + r, col = col0 + c;
                const bool inside = q < end && row >= 0 && row < h && col >= 0 && col < w;
                next[4 * r + c] = inside ? plane[row * w + col] : 0.0f;
            }
    };
    float acc[ONE_CHANNEL_ROWS];
    WHORL_UNROLL
    for (int k = 0; k < ONE_CHANNEL_ROWS; ++k) acc[k] = 0.0f;
    if (begin < end) gather(begin);
    for (int p0 = begin; p0 < end; p0 += POOLED_TILE) {
        __syncthreads();  // the previous tile's patches are no longer read
        float4* patch = reinterpret_cast<float4*>(patches + threadIdx.x * POOLED_PATCH);
        WHORL_UNROLL
        for (int i = 0; i < 4; ++i)
            patch[i] = make_float4(next[4 * i], next[4 * i + 1], next[4 * i + 2], next[4 * i + 3]);
        __syncthreads();
        if (p0 + POOLED_TILE < end) gather(p0 + POOLED_TILE);
        const int first = warp * 32, last = min(first + 32, end - p0);
        for (int q0 = first; q0 < last; q0 += POOLED_UNROLL) {
            float grad[POOLED_UNROLL];
            const float* rows = d_pooled + size_t(p0 + q0) * cout + co;
            WHORL_UNROLL
            for (int u = 0; u < POOLED_UNROLL; ++u)
                grad[u] = (q0 + u < last && exists) ? rows[u * cout] : 0.0f;
            WHORL_UNROLL
            for (int u = 0; u < POOLED_UNROLL; ++u) {
                if (q0 + u >= last) break;  // the same for the whole warp
                const float4* quads =
                    reinterpret_cast<const float4*>(patches + (q0 + u) * POOLED_PATCH);
                float v[4][4];
                WHORL_UNROLL
                for (int r = 0; r < 4; ++r) {
                    const float4 quad = quads[r];
                    v[r][0] = quad.x;
                    v[r][1] = quad.y;
                    v[r][2] = quad.z;
                    v[r][3] = quad.w;
                }
                // The window's outputs (a, b), each z in one_input_tap's order.
                float y[2][2];
                WHORL_UNROLL
                for (int a = 0; a < 2; ++a)
                    WHORL_UNROLL
                    for (int b = 0; b < 2; ++b) {
                        float z = start;
                        WHORL_UNROLL
                        for (int ty = 0; ty < 3; ++ty)
                            WHORL_UNROLL
                            for (int tx = 0; tx < 3; ++tx)
                                z = one_input_tap(z, weights[ty * 3 + tx], v[a + ty][b + tx]);
                        y[a][b] = activate(z, Activation);
                    }
                int at;
                const float best = first_max_of_four(y[0][0], y[0][1], y[1][0], y[1][1], at);
                const float g = grad[u] * activation_slope(best, Activation);
                const bool down = at >= 2, right = at % 2 == 1;
                WHORL_UNROLL
                for (int ty = 0; ty < 3; ++ty) {
                    float line[4];  // row ty of the maximum's window, and one column more
                    WHORL_UNROLL
                    for (int c = 0; c < 4; ++c) line[c] = down ? v[ty + 1][c] : v[ty][c];
                    WHORL_UNROLL
                    for (int tx = 0; tx < 3; ++tx)
                        acc[ty * 3 + tx] =
                            fmaf(right ? line[tx + 1] : line[tx], g, acc[ty * 3 + tx]);
                }
                acc[9] += g;
            }
        }
    }
    __syncthreads();  // the patches' memory becomes the warps' sums
    WHORL_UNROLL
    for (int k = 0; k < ONE_CHANNEL_ROWS; ++k)
        warp_sums[(warp * ONE_CHANNEL_ROWS + k) * POOLED_CHANNELS + lane] = acc[k];
    __syncthreads();
    float* out = partial + size_t(blockIdx.x) * ONE_CHANNEL_ROWS * cout;
    for (int e = threadIdx.x; e < ONE_CHANNEL_ROWS * POOLED_CHANNELS; e += WHORL_THREADS) {
        const int k = e / POOLED_CHANNELS, c = e % POOLED_CHANNELS;
        const int column = blockIdx.y * POOLED_CHANNELS + c;
        if (column >= cout) continue;
        out[k * cout + column] = warps_total(warp_sums, ONE_CHANNEL_ROWS * POOLED_CHANNELS, e);
    }
}

// Grid (chunks, ceil(cout / 32)) over the batch (h / 2) (w / 2) pooled pixels, pixels_per_chunk
// each; block 256; dynamic shared memory POOLED_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_pooled_filter_partials_one_channel(const float* __restrict__ x, int batch, int h, int w,
                                          const float* __restrict__ kernel, int cout,
                                          const float* __restrict__ bias, int activation,
                                          const float* __restrict__ d_pooled,
                                          int pixels_per_chunk, float* __restrict__ partial) {
    if (activation == WHORL_RELU)
        pooled_filter_partials_one_channel<WHORL_RELU>(x, batch, h, w, kernel, cout, bias,
                                                       d_pooled, pixels_per_chunk, partial);
    else if (activation == WHORL_SIGMOID)
        pooled_filter_partials_one_channel<WHORL_SIGMOID>(x, batch, h, w, kernel, cout, bias,
                                                          d_pooled, pixels_per_chunk, partial);
    else
        pooled_filter_partials_one_channel<WHORL_NO_ACTIVATION>(x, batch, h, w, kernel, cout,
                                                                bias, d_pooled,
                                                                pixels_per_chunk, partial);
}

// conv2d_upsampled_one_output_channel_backward for x the output of XActivation (its derivative
// folded into each copy).
template <int XActivation>
__device__ __forceinline__ void upsampled_one_output_backward(
    const float* __restrict__ x, int batch, int src_h, int src_w, int cin,
    const float* __restrict__ dz, const float* __restrict__ kernel, float* __restrict__ dx,
    int pixels_per_chunk, float* __restrict__ partial) {
    static_assert(WHORL_THREADS * UPSAMPLED_BACKWARD_WINDOW <= UPSAMPLED_BACKWARD_SHARED_FLOATS,
                  "the staged windows fit in the shared memory of the sums");
    WHORL_DYNAMIC_SHARED(float, shared);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // [32][WINDOW]: this warp's staged windows, while a pass reads the chunk.
    float* windows = shared + warp * 32 * UPSAMPLED_BACKWARD_WINDOW;
    float* warp_sums = shared;  // [warp][WARP_SUMS], at the end of a pass
    const int plane = src_h * src_w, pixels = batch * plane;
    const int h = 2 * src_h, w = 2 * src_w;
    const int begin = blockIdx.x * pixels_per_chunk;
    const int end = min(pixels, begin + pixels_per_chunk);
    float* out = partial + size_t(blockIdx.x) * (9 * cin + 1);
    // The box sums B of this lane's pixel of the tile at p0, in tap order (zeros past the
    // chunk's end). Not read ahead for the next tile: 9 more live registers would cost the
    // third block on each multiprocessor.
    float next[9];
    auto gather = [&](int p0) {
        const int s = p0 + warp * 32 + lane;
        const int image = s / plane, within = s % plane;
        const int row0 = 2 * (within / src_w) - 1, col0 = 2 * (within % src_w) - 1;
        const float* image_dz = dz + size_t(image) * h * w;
        float patch[4][4];  // dz[row0 + r, col0 + c]
        WHORL_UNROLL
        for (int r = 0; r < 4; ++r)
            WHORL_UNROLL
            for (int c = 0; c < 4; ++c) {
                const int row = row0 + r, col = col0 + c;
                const bool inside = s < end && row >= 0 && row < h && col >= 0 && col < w;
                patch[r][c] = inside ? image_dz[row * w + col] : 0.0f;
            }
        // Q[2i + a, 2j + b] covers patch rows a, a + 1 and columns b, b + 1.
        float pairs[4][3];
        WHORL_UNROLL
        for (int r = 0; r < 4; ++r)
            WHORL_UNROLL
            for (int b = 0; b < 3; ++b) pairs[r][b] = patch[r][b] + patch[r][b + 1];
        WHORL_UNROLL
        for (int ky = 0; ky < 3; ++ky)
            WHORL_UNROLL
            for (int kx = 0; kx < 3; ++kx)
                next[ky * 3 + kx] = pairs[2 - ky][2 - kx] + pairs[3 - ky][2 - kx];
    };
    for (int c0 = 0; c0 < cin; c0 += UPSAMPLED_BACKWARD_CHANNELS) {
        // This lane's channels of the pass, c0 + lane + 32 g: their taps and running sums. A
        // channel past cin has zero taps and reads zeros (its sums stay 0) and is not written.
        bool exists[UPSAMPLED_BACKWARD_GROUPS];
        float taps[UPSAMPLED_BACKWARD_GROUPS][9], acc[UPSAMPLED_BACKWARD_GROUPS][9];
        float bias_sum = 0.0f;
        WHORL_UNROLL
        for (int g = 0; g < UPSAMPLED_BACKWARD_GROUPS; ++g) {
            const int c = c0 + 32 * g + lane;
            exists[g] = c < cin;
            WHORL_UNROLL
            for (int t = 0; t < 9; ++t) {
                taps[g][t] = exists[g] ? kernel[t * cin + c] : 0.0f;
                acc[g][t] = 0.0f;
            }
        }
        for (int p0 = begin; p0 < end; p0 += WHORL_THREADS) {
            gather(p0);
            __syncwarp();  // the warp's previous windows are no longer read
            float4* window = reinterpret_cast<float4*>(windows + lane * UPSAMPLED_BACKWARD_WINDOW);
            window[0] = make_float4(next[0], next[1], next[2], next[3]);
            window[1] = make_float4(next[4], next[5], next[6], next[7]);
            window[2] = make_float4(next[8], 0.0f, 0.0f, 0.0f);
            __syncwarp();
            const int first = p0 + warp * 32, count = min(32, end - first);
            for (int q0 = 0; q0 < count; q0 += UPSAMPLED_BACKWARD_UNROLL) {
                // Element (first + q0 + u, c0 + lane + 32 g) is at + u cin + 32 g.
                const int at = (first + q0) * cin + c0 + lane;
                float values[UPSAMPLED_BACKWARD_UNROLL][UPSAMPLED_BACKWARD_GROUPS];
                WHORL_UNROLL
                for (int u = 0; u < UPSAMPLED_BACKWARD_UNROLL; ++u)
                    WHORL_UNROLL
                    for (int g = 0; g < UPSAMPLED_BACKWARD_GROUPS; ++g)
                        values[u][g] =
                            (q0 + u < count && exists[g]) ? x[at + u * cin + 32 * g] : 0.0f;
                WHORL_UNROLL
                for (int u = 0; u < UPSAMPLED_BACKWARD_UNROLL; ++u) {
                    if (q0 + u >= count) break;  // the same for the whole warp
                    const float4* quads = reinterpret_cast<const float4*>(
                        windows + (q0 + u) * UPSAMPLED_BACKWARD_WINDOW);
                    const float4 w0 = quads[0], w1 = quads[1], w2 = quads[2];
                    const float box[9] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w, w2.x};
                    bias_sum += box[4];
                    WHORL_UNROLL
                    for (int g = 0; g < UPSAMPLED_BACKWARD_GROUPS; ++g) {
                        float d = 0.0f;
                        WHORL_UNROLL
                        for (int t = 0; t < 9; ++t) {
                            d = fmaf(taps[g][t], box[t], d);
                            acc[g][t] = fmaf(values[u][g], box[t], acc[g][t]);
                        }
                        if (exists[g])
                            dx[at + u * cin + 32 * g] =
                                d * activation_slope(values[u][g], XActivation);
                    }
                }
            }
        }
        __syncthreads();  // every warp's windows become the warps' sums
        float* sums = warp_sums + warp * UPSAMPLED_BACKWARD_WARP_SUMS;
        WHORL_UNROLL
        for (int g = 0; g < UPSAMPLED_BACKWARD_GROUPS; ++g)
            WHORL_UNROLL
            for (int t = 0; t < 9; ++t)
                sums[t * UPSAMPLED_BACKWARD_CHANNELS + 32 * g + lane] = acc[g][t];
        if (lane == 0) sums[9 * UPSAMPLED_BACKWARD_CHANNELS] = bias_sum;
        __syncthreads();
        for (int e = threadIdx.x; e < UPSAMPLED_BACKWARD_WARP_SUMS; e += WHORL_THREADS) {
            const int t = e / UPSAMPLED_BACKWARD_CHANNELS, c = c0 + e % UPSAMPLED_BACKWARD_CHANNELS;
            const bool bias = t == 9;  // written by the first pass
            if (bias ? c0 > 0 : c >= cin) continue;
            out[bias ? 9 * cin : t * cin + c] =
                warps_total(warp_sums, UPSAMPLED_BACKWARD_WARP_SUMS, e);
        }
        __syncthreads();  // the sums are read before the next pass stages windows there
    }
}

// The backward pass of a 3x3 'same' convolution with one output channel of u = upsample2(x)
// (conv2d_upsampled_one_output_channel's), x [batch, src_h, src_w, cin], from dz
// [batch, 2 src_h, 2 src_w] (dL/dz, z the convolution's output before its activation), in one
// pass over x. With the 2x2 box sums Q[m, n] = dz[m - 1, n - 1] + dz[m - 1, n] + dz[m, n - 1] +
// dz[m, n] (dz zero outside its image, as upsample2_box_sums) and, for source pixel
// s = (image, i, j) and tap t = 3 ky + kx, B(s)[t] = Q[2i + 2 - ky, 2j + 2 - kx] (conv2d.cu
// derives them):
//   dx[s, ci] = activation'(x[s, ci]) sum over t of kernel[t, ci] B(s)[t], activation' as
//     activation_slope's (x is the output of x_activation; 1 with WHORL_NO_ACTIVATION)
//   partial[chunk, t cin + ci] = sum over the chunk's source pixels s of x[s, ci] B(s)[t]
//   partial[chunk, 9 cin] = sum over them of B(s)[4] (the aligned boxes cover dz once: the bias)
// the kernel and bias gradients' layout, so that sum_partials with count 9 cin + 1 finishes them.
// x is read once, each pixel's 4x4 patch of dz (rows 2i - 1 .. 2i + 2, columns 2j - 1 .. 2j + 2)
// once, dx written once.
// The block walks its chunk in passes of UPSAMPLED_BACKWARD_CHANNELS channels (one pass for
// cin <= 64), each in tiles of 256 source pixels: warp v owns pixels 32v .. 32v + 31 of a tile,
// and lane l stages pixel 32v + l's 9 box sums in the warp's shared memory. The warp then takes
// its pixels 4 at a time: lane l loads channels c0 + l and c0 + l + 32 of the 4 pixels' rows of
// x together (coalesced rows, 8 loads in flight), then per pixel reads its box sums (three
// 16-byte broadcast reads) and, per channel, with the channel's 9 taps in registers, does dx's
// 9 FMAs (dx written coalesced) and 9 FMAs into the channel's running kernel-gradient sums;
// every lane adds the centre box sum into a bias sum. Pixels in order; at the end of a pass the
// warps' sums meet in shared memory and are added in warp order: deterministic, no atomics.
// Grid: chunks of pixels_per_chunk source pixels; block 256 (at most 80 registers a thread, so
// that UPSAMPLED_BACKWARD_BLOCKS blocks fit on a multiprocessor); dynamic shared memory
// UPSAMPLED_BACKWARD_SHARED_FLOATS; batch src_h src_w cin < 2^31.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS, UPSAMPLED_BACKWARD_BLOCKS)
conv2d_upsampled_one_output_channel_backward(const float* __restrict__ x, int batch, int src_h,
                                             int src_w, int cin, const float* __restrict__ dz,
                                             const float* __restrict__ kernel, int x_activation,
                                             float* __restrict__ dx, int pixels_per_chunk,
                                             float* __restrict__ partial) {
    if (x_activation == WHORL_RELU)
        upsampled_one_output_backward<WHORL_RELU>(x, batch, src_h, src_w, cin, dz, kernel, dx,
                                                  pixels_per_chunk, partial);
    else if (x_activation == WHORL_SIGMOID)
        upsampled_one_output_backward<WHORL_SIGMOID>(x, batch, src_h, src_w, cin, dz, kernel, dx,
                                                     pixels_per_chunk, partial);
    else
        upsampled_one_output_backward<WHORL_NO_ACTIVATION>(x, batch, src_h, src_w, cin, dz,
                                                           kernel, dx, pixels_per_chunk, partial);
}
