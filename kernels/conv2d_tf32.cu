// The convolution GEMM of conv2d.cu on tensor cores, in TF32 or BF16: the same contract as
// conv2d_gathered_gemm (a window gathered per grid pixel, tap-major K, out[p', n] =
// epilogue_output(bias + window(p) W), scattered by out_stride/out_row/out_col; the _pooled
// kernel writes the 2x2 max pooling of out too, the grid in window-major order), with operands
// rounded to TF32 (round to nearest) and products accumulated in float32, as cuDNN and
// PyTorch run convolutions by default on Ampere and newer GPUs; the _bf16 kernels round the
// operands to BF16 instead (Operands, below).
//
// Needs src_c and n multiples of 4: a 16-byte copy is then 4 channels of one tap of one pixel
// (never across a tap) or 4 adjacent output channels of W, so the tiles fill by cp.async.
// conv2-conv5 qualify in every pass; conv1 (one input channel) and conv6 (one output channel)
// stay on the CUDA-core kernel.
#include "whorl.cuh"

// Block tiles of TILE_P pixels x TILE_N channels, K in slices of SLICE (TF32_SLICE, 16)
// through a shared-memory pipeline of STAGES (TF32_STAGES, 3) stages; WARP_P x WARP_N warp
// tiles of m16n8k8 mma tiles, TILE_N / WARP_N warps along the channels and the rest along the
// pixels. Two families, the same tiles:
// - 8 warps of (TILE_P / warps along the pixels) x 32 (WHORL_THREADS threads). The tile
//   follows the layer: 128 x 128 for more than 64 output channels, 256 x 64 for 33-64 (64 x 32
//   warp tiles), 256 x 32 for at most 32 (32 x 32), so no warp multiplies columns that do not
//   exist.
// - 4 warps of 64 x 64 (TF32_FOUR_WARPS_THREADS threads) for the 128 x 128 and 256 x 64
//   tiles, of 64 x 32 for the 256 x 32 one: each value a warp reads from shared memory feeds
//   twice the mma of an eight-warp tile's warp (a third or a quarter fewer reads per mma), for
//   fewer warps to hide latency with; which is faster depends on the GPU and the layer, so the
//   backend times both on first use and keeps the faster (they give the same bits: every
//   output adds its mma in the same K order). (A 256 x 128 tile of 8 such warps, at 209
//   registers one block an SM, was 5-10% slower on an H100.)
// The 128 x 128 tile of either family also comes on slices of TF32_LONG_SLICE (in four warps,
// CUTLASS's 128 x 128 x 32 tile of 64 x 64 x 32 warp tiles): half the barriers and copy set-ups
// per mma, 96 KiB of shared memory (two blocks an SM on an H100, as registers allow the eight-
// warp tile anyway; one on sm_89).
// Both operands are K-contiguous in shared memory (the windows, and W as the backend passes
// it: transposed to [n][K] and rounded by tensor_core_weights_k_major), so ldmatrix reads the
// fragments of both, and only A's are rounded in the main loop (in BF16 B's are paired too,
// which keeps their rounded values).
#define TF32_SLICE 16
#define TF32_LONG_SLICE 32
#define TF32_STAGES 3
#define TF32_WIDE_TILE_P 128
#define TF32_WIDE_TILE_N 128
#define TF32_TILE_P 256
#define TF32_TILE_N 64
#define TF32_NARROW_TILE_P 256
#define TF32_NARROW_TILE_N 32
#define TF32_FOUR_WARPS_THREADS 128
#define TF32_WIDE_SHARED_FLOATS (TF32_STAGES * TF32_SLICE * (TF32_WIDE_TILE_P + TF32_WIDE_TILE_N))
#define TF32_WIDE_LONG_SHARED_FLOATS (TF32_STAGES * TF32_LONG_SLICE * (TF32_WIDE_TILE_P + TF32_WIDE_TILE_N))
#define TF32_SHARED_FLOATS (TF32_STAGES * TF32_SLICE * (TF32_TILE_P + TF32_TILE_N))
#define TF32_NARROW_SHARED_FLOATS (TF32_STAGES * TF32_SLICE * (TF32_NARROW_TILE_P + TF32_NARROW_TILE_N))
// Blocks an SM the pooling 256 x 64 tile is compiled for: as many as the plain one fits (its
// epilogue's shuffles would otherwise take it past 128 registers on sm_90, and to one block).
#define TF32_POOLED_BLOCKS 2

// What the mma.sync tiles multiply (their template argument):
// - Tf32: m16n8k8, an mma per 8 of K, operands rounded to TF32 (tf32_round) as they are read,
//   or before where they were stored rounded;
// - Bf16: m16n8k16, an mma per 16 of K, operands rounded to BF16: each lane pairs the two
//   m16n8k8 fragments it reads for TF32 (bf16_a_fragment, bf16_b_fragment), so the stages,
//   copies and fragment reads are the same. Half the mma for the same K, each at TF32's
//   issue rate (BF16's tensor-core peak is twice TF32's from Ampere on): faster where the
//   tensor cores bound the loop (the L40S's 362 dense TFLOP/s against 183), for 3 fewer
//   significant bits (8; products still exact and summed in float32).
enum class Operands { Tf32, Bf16 };

// K of one mma.
template <Operands OPERANDS>
constexpr int MMA_K = OPERANDS == Operands::Bf16 ? 16 : 8;

// Registers read as float32 bits, rounded to TF32 in place.
template <int R>
__device__ __forceinline__ void round_to_tf32(unsigned (&registers)[R]) {
    WHORL_UNROLL
    for (int i = 0; i < R; ++i) registers[i] = tf32_round(__uint_as_float(registers[i]));
}

// One mma's A operand of a lane (a) from the m16n8k8 fragments of its K, as read (float32
// bits): rounded to TF32, or paired into BF16.
template <Operands OPERANDS>
__device__ __forceinline__ void a_operand(unsigned (&a)[4],
                                          unsigned (&read)[MMA_K<OPERANDS> / 8][4]) {
    if constexpr (OPERANDS == Operands::Bf16) {
        bf16_a_fragment(a, read[0], read[1]);
    } else {
        round_to_tf32(read[0]);
        WHORL_UNROLL
        for (int i = 0; i < 4; ++i) a[i] = read[0][i];
    }
}

// The same for B, whose values may have been stored rounded (STORED_ROUNDED: to TF32 for TF32,
// where it is then used as read; to BF16 for BF16, where pairing keeps them).
template <Operands OPERANDS, bool STORED_ROUNDED>
__device__ __forceinline__ void b_operand(unsigned (&b)[2],
                                          unsigned (&read)[MMA_K<OPERANDS> / 8][2]) {
    if constexpr (OPERANDS == Operands::Bf16) {
        bf16_b_fragment(b, read[0], read[1]);
    } else {
        if constexpr (!STORED_ROUNDED) round_to_tf32(read[0]);
        b[0] = read[0][0];
        b[1] = read[0][1];
    }
}

// acc += a b by one mma of OPERANDS.
template <Operands OPERANDS>
__device__ __forceinline__ void tensor_core_mma(float (&acc)[4], const unsigned (&a)[4],
                                                const unsigned (&b)[2]) {
    if constexpr (OPERANDS == Operands::Bf16)
        mma_bf16_m16n8k16(acc, a, b, acc);
    else
        mma_tf32_m16n8k8(acc, a, b, acc);
}

// The STAGES-stage cp.async pipeline of the kernels here: load(slice, stage) starts the copies
// of a slice into a stage of shared memory, multiply(stage) consumes one; loads run STAGES - 1
// slices ahead of the multiplications, the stages taken in turn. landed() runs in every thread
// once its copies of the next stage have landed, before the barrier that hands them to the
// block (the wgmma tiles make them visible to the asynchronous proxy there).
template <int STAGES, typename Load, typename Multiply, typename Landed>
__device__ __forceinline__ void cp_async_pipeline(int slices, Load load, Multiply multiply,
                                                  Landed landed) {
    for (int stage = 0; stage < STAGES - 1; ++stage) {
        if (stage < slices) load(stage, stage);
        cp_async_commit();
    }
    int read_stage = 0, write_stage = STAGES - 1;
    for (int slice = 0; slice < slices; ++slice) {
        cp_async_wait<STAGES - 2>();
        landed();
        __syncthreads();
        // Every warp is past slice - 1, so its stage (write_stage) can be refilled.
        if (slice + STAGES - 1 < slices) load(slice + STAGES - 1, write_stage);
        cp_async_commit();
        multiply(read_stage);
        write_stage = read_stage;
        read_stage = read_stage == STAGES - 1 ? 0 : read_stage + 1;
    }
    cp_async_wait<0>();
}

template <int STAGES, typename Load, typename Multiply>
__device__ __forceinline__ void cp_async_pipeline(int slices, Load load, Multiply multiply) {
    cp_async_pipeline<STAGES>(slices, load, multiply, [] {});
}

// Where float `column` (a multiple of 4) of row `row` is in a shared-memory tile of rows of
// SLICE floats (K-contiguous, no padding): its 16-byte chunk is stored at chunk
// (column / 4) ^ swizzle(row), swizzle(row) = (row / (8 / chunks)) % chunks, so the 8 rows an
// ldmatrix matrix reads at one column fill the 8 16-byte bank groups (128 bytes) once: with 4
// chunks a row, rows 2i and 2i + 1 share 128 bytes and rows 0, 2, 4, 6 take each chunk
// position once. The swizzle repeats every 8 rows.
template <int SLICE>
__device__ __forceinline__ int tf32_tile_offset(int row, int column) {
    constexpr int CHUNKS = SLICE / 4, ROWS_PER_128_BYTES = 8 / CHUNKS;
    return row * SLICE + 4 * ((column / 4) ^ ((row / ROWS_PER_128_BYTES) % CHUNKS));
}

// How a block's warps share its TILE_P x TILE_N tile and multiply one stage of it. Each layout
// is a struct of what a lane keeps (its first accumulator row and column in the tile, where its
// fragments are in a stage) and four functions overloaded on it:
// - place_warps(warps, warp, lane): fills it in for the lane;
// - multiply_stage(warps, a_tile, b_tile, acc): adds a stage's SLICE of K to the lane's
//   accumulators acc[MI][NI][4], the m16n8 C fragments of rows row + ROW_STEP mi .. + 16 and
//   columns column + 8 ni .. + 8, each output's products in k order;
// - stages_at(warps, shared): where the pipeline's stages start in dynamic shared memory;
// - hand_over(warps): what a thread does between its copies landing and the barrier.
// Both layouts multiply in the same k order, so they give the same bits.

// Where lane `lane`'s ldmatrix row of an m16n8k8 A fragment is in a stage of rows of SLICE
// floats: for the fragment of rows row .. + 16 and columns ks .. + 8, lane l points at row
// row + l % 8 + 8 ((l / 8) % 2), column ks + 4 (l / 16), so the four 8 x 4 matrices are
// a[0..3]. The swizzle repeats every 8 rows, so the next 16 rows are 16 SLICE floats on.
template <int SLICE>
__device__ __forceinline__ int a_fragment_offset(int row, int ks, int lane) {
    return tf32_tile_offset<SLICE>(row + lane % 8 + 8 * ((lane / 8) % 2), ks + 4 * (lane / 16));
}

// Warp tiles of mma.sync: WARP_P x WARP_N per warp, TILE_N / WARP_N warps along the channels and
// the rest along the pixels. Per mma's K (8 for TF32, 16 for BF16) each lane loads MI A
// fragments and NI B fragments of each 8 of K with ldmatrix (two B fragments a load), rounds
// them (a_operand, b_operand: B was stored rounded) and issues MI NI mma.
// Rounding A as its fragments are read costs one integer addition a value in TF32 (the tensor
// core's truncation clears the low bits), one conversion a pair in BF16; rounding in shared
// memory when the copies land would cost a third more shared-memory traffic, which is what
// bounds this loop on an H100.
template <int TILE_P_, int TILE_N_, int WARP_N, int THREADS_, int SLICE_, Operands OPERANDS_>
struct MmaSyncWarps {
    static constexpr int TILE_P = TILE_P_, TILE_N = TILE_N_, THREADS = THREADS_, SLICE = SLICE_;
    static constexpr Operands OPERANDS = OPERANDS_;
    static constexpr int WARPS_N = TILE_N / WARP_N, WARPS_P = THREADS / 32 / WARPS_N;
    static constexpr int MI = TILE_P / WARPS_P / 16, NI = WARP_N / 8, ROW_STEP = 16;
    int row, column;
    // This lane's ldmatrix rows for each 8 of K.
    int a_read[SLICE / 8], b_read[SLICE / 8];
};

// Warp w computes pixels WARP_P (w / WARPS_N) .. + WARP_P x channels WARP_N (w % WARPS_N) ..
// + WARP_N. A as a_fragment_offset says. B ([n][K]): lane l points at row (channel)
// l % 8 + 8 (l / 16), column 4 ((l / 8) % 2) of 16 channels x 8, so the matrices are b[0] and
// b[1] of the first 8 channels, then of the next 8.
template <int TILE_P, int TILE_N, int WARP_N, int THREADS, int SLICE, Operands OPERANDS>
__device__ __forceinline__ void place_warps(
    MmaSyncWarps<TILE_P, TILE_N, WARP_N, THREADS, SLICE, OPERANDS>& warps, int warp, int lane) {
    using Warps = MmaSyncWarps<TILE_P, TILE_N, WARP_N, THREADS, SLICE, OPERANDS>;
    warps.row = (warp / Warps::WARPS_N) * (TILE_P / Warps::WARPS_P);
    warps.column = (warp % Warps::WARPS_N) * WARP_N;
    WHORL_UNROLL
    for (int ks = 0; ks < SLICE; ks += 8) {
        warps.a_read[ks / 8] = a_fragment_offset<SLICE>(warps.row, ks, lane);
        warps.b_read[ks / 8] = tf32_tile_offset<SLICE>(warps.column + lane % 8 + 8 * (lane / 16),
                                                       ks + 4 * ((lane / 8) % 2));
    }
}

template <int TILE_P, int TILE_N, int WARP_N, int THREADS, int SLICE, Operands OPERANDS, int MI,
          int NI>
__device__ __forceinline__ void multiply_stage(
    const MmaSyncWarps<TILE_P, TILE_N, WARP_N, THREADS, SLICE, OPERANDS>& warps,
    const float* a_tile, const float* b_tile, float (&acc)[MI][NI][4]) {
    constexpr int K = MMA_K<OPERANDS>, K8 = K / 8;
    WHORL_UNROLL
    for (int ks = 0; ks < SLICE; ks += K) {
        unsigned a[MI][4], b[NI][2];
        WHORL_UNROLL
        for (int mi = 0; mi < MI; ++mi) {
            unsigned read[K8][4];
            WHORL_UNROLL
            for (int h = 0; h < K8; ++h)
                ldmatrix_x4(read[h], a_tile + warps.a_read[ks / 8 + h] + mi * 16 * SLICE);
            a_operand<OPERANDS>(a[mi], read);
        }
        WHORL_UNROLL
        for (int ni = 0; ni < NI; ni += 2) {
            unsigned read[2][K8][2];
            WHORL_UNROLL
            for (int h = 0; h < K8; ++h) {
                unsigned pair[4];
                ldmatrix_x4(pair, b_tile + warps.b_read[ks / 8 + h] + ni * 8 * SLICE);
                read[0][h][0] = pair[0];
                read[0][h][1] = pair[1];
                read[1][h][0] = pair[2];
                read[1][h][1] = pair[3];
            }
            b_operand<OPERANDS, true>(b[ni], read[0]);
            b_operand<OPERANDS, true>(b[ni + 1], read[1]);
        }
        WHORL_UNROLL
        for (int mi = 0; mi < MI; ++mi) {
            WHORL_UNROLL
            for (int ni = 0; ni < NI; ++ni) tensor_core_mma<OPERANDS>(acc[mi][ni], a[mi], b[ni]);
        }
    }
}

template <int TILE_P, int TILE_N, int WARP_N, int THREADS, int SLICE, Operands OPERANDS>
__device__ __forceinline__ float* stages_at(
    const MmaSyncWarps<TILE_P, TILE_N, WARP_N, THREADS, SLICE, OPERANDS>&, float* shared) {
    return shared;
}

template <int TILE_P, int TILE_N, int WARP_N, int THREADS, int SLICE, Operands OPERANDS>
__device__ __forceinline__ void hand_over(
    const MmaSyncWarps<TILE_P, TILE_N, WARP_N, THREADS, SLICE, OPERANDS>&) {}

#ifdef WHORL_WARPGROUP_MMA
// wgmma_tf32_m64nk8<N>: the wgmma of N (64 or 128) columns.
template <int N>
__device__ __forceinline__ void wgmma_tf32_m64nk8(float* d, const unsigned a[4],
                                                  unsigned long long b) {
    static_assert(N == 64 || N == 128, "whorl.cuh wraps wgmma of 64 and 128 columns");
    if constexpr (N == 128)
        wgmma_tf32_m64n128k8(d, a, b);
    else
        wgmma_tf32_m64n64k8(d, a, b);
}

// acc += A B over one stage of 32 of K, by the warpgroup, retired before it returns:
// a[ks / 8][mi] is the warp's A fragment of 64-row block mi and K ks .. + 8; B comes from
// b_k_major, NI * 8 rows of 32 K values with the 128-byte swizzle, by wgmma of WGMMA_N columns.
template <int WGMMA_N, int MI, int NI>
__device__ __forceinline__ void wgmma_stage(float (&acc)[MI][NI][4],
                                            const unsigned (&a)[4][MI][4],
                                            const float* b_k_major) {
    wgmma_fence();
    WHORL_UNROLL
    for (int ks = 0; ks < 32; ks += 8) {
        WHORL_UNROLL
        for (int mi = 0; mi < MI; ++mi) {
            WHORL_UNROLL
            for (int h = 0; h < NI * 8 / WGMMA_N; ++h)
                wgmma_tf32_m64nk8<WGMMA_N>(
                    acc[mi][WGMMA_N / 8 * h], a[ks / 8][mi],
                    wgmma_descriptor_128b(b_k_major + h * WGMMA_N * 32 + ks));
        }
    }
    wgmma_commit();
    wgmma_wait<0>();
}

// Warpgroups of wgmma (Hopper, sm_90a): THREADS / 128 warpgroups along the pixels, each
// TILE_P / warpgroups rows (MI blocks of 64) x all TILE_N channels (per block and 8 of K,
// TILE_N / WGMMA_N wgmma of WGMMA_N columns: one of 128 reads A once where two of 64 read it
// twice, for 64 accumulators a thread held at once). Warp q of a warpgroup holds rows
// 16q .. + 16 of each 64-row block: it loads and rounds its A fragments with ldmatrix as the
// warp tiles do, while the tensor cores read B straight from the stage through a descriptor of
// its 128-byte swizzle (so SLICE is 32: rows of 128 bytes, the swizzle tf32_tile_offset<32>
// writes). A stage's wgmma form one group (wgmma_stage), retired before the stage goes back to
// the copies; the copies are fenced for the asynchronous proxy before the barrier that
// hands a stage over.
template <int TILE_P_, int TILE_N_, int THREADS_, int WGMMA_N_>
struct WgmmaWarpgroups {
    static constexpr int TILE_P = TILE_P_, TILE_N = TILE_N_, THREADS = THREADS_, SLICE = 32;
    static constexpr int WGMMA_N = WGMMA_N_;
    static constexpr int WARPGROUPS = THREADS / 128, MI = TILE_P / WARPGROUPS / 64;
    static constexpr int NI = TILE_N / 8, ROW_STEP = 64;
    static_assert(THREADS % 128 == 0 && MI >= 1 && TILE_N % WGMMA_N == 0,
                  "whole warpgroups, 64-row blocks and wgmma of WGMMA_N columns");
    int row, column;
    // This lane's ldmatrix rows for each 8 of K.
    int a_read[SLICE / 8];
};

template <int TILE_P, int TILE_N, int THREADS, int WGMMA_N>
__device__ __forceinline__ void place_warps(
    WgmmaWarpgroups<TILE_P, TILE_N, THREADS, WGMMA_N>& warps, int warp, int lane) {
    using Warps = WgmmaWarpgroups<TILE_P, TILE_N, THREADS, WGMMA_N>;
    warps.row = (warp / 4) * (TILE_P / Warps::WARPGROUPS) + (warp % 4) * 16;
    warps.column = 0;
    WHORL_UNROLL
    for (int ks = 0; ks < Warps::SLICE; ks += 8)
        warps.a_read[ks / 8] = a_fragment_offset<Warps::SLICE>(warps.row, ks, lane);
}

template <int TILE_P, int TILE_N, int THREADS, int WGMMA_N, int MI, int NI>
__device__ __forceinline__ void multiply_stage(
    const WgmmaWarpgroups<TILE_P, TILE_N, THREADS, WGMMA_N>& warps, const float* a_tile,
    const float* b_tile, float (&acc)[MI][NI][4]) {
    constexpr int SLICE = WgmmaWarpgroups<TILE_P, TILE_N, THREADS, WGMMA_N>::SLICE;
    unsigned a[SLICE / 8][MI][4];
    WHORL_UNROLL
    for (int ks = 0; ks < SLICE; ks += 8) {
        WHORL_UNROLL
        for (int mi = 0; mi < MI; ++mi) {
            ldmatrix_x4(a[ks / 8][mi], a_tile + warps.a_read[ks / 8] + mi * 64 * SLICE);
            round_to_tf32(a[ks / 8][mi]);
        }
    }
    wgmma_stage<WGMMA_N>(acc, a, b_tile);
}

// The descriptors need the stages' 8-row groups 1024-byte aligned: the kernels' dynamic shared
// memory has TF32_WGMMA_ALIGNMENT_FLOATS to spare for it.
template <int TILE_P, int TILE_N, int THREADS, int WGMMA_N>
__device__ __forceinline__ float* stages_at(
    const WgmmaWarpgroups<TILE_P, TILE_N, THREADS, WGMMA_N>&, float* shared) {
    return swizzle_aligned(shared);
}

template <int TILE_P, int TILE_N, int THREADS, int WGMMA_N>
__device__ __forceinline__ void hand_over(
    const WgmmaWarpgroups<TILE_P, TILE_N, THREADS, WGMMA_N>&) {
    fence_async_proxy_shared();
}
#endif

// out[p', n] = epilogue_output(bias + window(p) W) for one Warps::TILE_P x TILE_N tile per
// block of THREADS threads (T), with weights_k_major = W transposed ([n][K]) and rounded to
// TF32, K in slices of SLICE through a STAGES-stage pipeline.
// Copying, C = SLICE / 4 chunks of 16 bytes a row: thread t fills chunk t % C (4 channels at K
// column 4 (t % C)) of pixel rows t / C + (T / C) i, and of W's rows (output channels)
// t / C + (T / C) j. The windows are copied through L1 (cp_async_16_cached): the block's
// next taps read mostly the same pixels again.
template <typename Warps, int STAGES, bool Pooling>
__device__ __forceinline__ void tf32_gathered_gemm_tile(
    const float* __restrict__ src, int grid_n, int grid_h, int grid_w, int src_h, int src_w,
    int src_c, int window, int stride, int origin_row, int origin_col,
    const float* __restrict__ weights_k_major, int n, const float* __restrict__ bias,
    int activation, const float* __restrict__ slope_at, float* __restrict__ out, int out_h,
    int out_w, int out_stride, int out_row, int out_col, float* __restrict__ pooled) {
    constexpr int TILE_P = Warps::TILE_P, TILE_N = Warps::TILE_N, THREADS = Warps::THREADS;
    constexpr int SLICE = Warps::SLICE, CHUNKS = SLICE / 4, ROW_STEP = THREADS / CHUNKS;
    constexpr int A_COPIES = TILE_P / ROW_STEP;
    constexpr int B_VECTORS = TILE_N * CHUNKS;  // 16-byte copies of W per slice
    constexpr int B_COPIES = (B_VECTORS + THREADS - 1) / THREADS;
    const int thread = threadIdx.x, lane = thread % 32;
    const int g = lane / 4, t = lane % 4;
    Warps warps;
    place_warps(warps, thread / 32, lane);
    WHORL_DYNAMIC_SHARED(float, shared);
    float* a_stages = stages_at(warps, shared);         // [stage][TILE_P][SLICE], swizzled
    float* b_stages = a_stages + STAGES * TILE_P * SLICE; // [stage][TILE_N][SLICE], swizzled
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int p0 = blockIdx.x * TILE_P, n0 = blockIdx.y * TILE_N;
    constexpr bool pooling = Pooling;

    // This thread's copies: pixel rows and K column of the window tile, rows of W; where they
    // go in a stage (ROW_STEP rows apart, a multiple of 8: the same swizzle) and where W's
    // first comes from.
    const int copy_column = (thread % CHUNKS) * 4, copy_row = thread / CHUNKS;
    GatherRow rows[A_COPIES];
    WHORL_UNROLL
    for (int i = 0; i < A_COPIES; ++i)
        rows[i] = gather_row(p0 + copy_row + i * ROW_STEP, pixels, grid_h, grid_w, src_h, src_w,
                             src_c, window, stride, origin_row, origin_col, pooling);
    TapCursor cursor = tap_cursor(copy_column, src_c, window);
    const int copy_target = tf32_tile_offset<SLICE>(copy_row, copy_column);
    const float* b_source = weights_k_major + size_t(n0 + copy_row) * k_total + copy_column;

    // Starts copying slice `slice` into `stage`; the cursor is at its K.
    auto load_slice = [&](int slice, int stage) {
        const int k0 = slice * SLICE;
        const bool k_inside = k0 + copy_column < k_total;
        const unsigned tap = 1u << (cursor.ty * window + cursor.tx);
        const int tap_offset = (cursor.ty * src_w + cursor.tx) * src_c + cursor.channel;
        float* a_stage = a_stages + stage * TILE_P * SLICE + copy_target;
        WHORL_UNROLL
        for (int i = 0; i < A_COPIES; ++i) {
            const bool inside = k_inside && (rows[i].taps_inside & tap);
            cp_async_16_cached(a_stage + i * ROW_STEP * SLICE,
                               inside ? src + (rows[i].offset + tap_offset) : src, !inside);
        }
        float* b_stage = b_stages + stage * TILE_N * SLICE + copy_target;
        WHORL_UNROLL
        for (int j = 0; j < B_COPIES; ++j) {
            if (B_VECTORS % THREADS != 0 && thread + j * THREADS >= B_VECTORS) break;
            const bool inside = k_inside && n0 + copy_row + j * ROW_STEP < n;
            cp_async_16(b_stage + j * ROW_STEP * SLICE,
                        inside ? b_source + (size_t(j) * ROW_STEP * k_total + k0)
                               : weights_k_major,
                        !inside);
        }
        advance(cursor, SLICE, src_c, window);
    };

    float acc[Warps::MI][Warps::NI][4] = {};
    auto multiply = [&](int stage) {
        multiply_stage(warps, a_stages + stage * TILE_P * SLICE, b_stages + stage * TILE_N * SLICE,
                       acc);
    };
    cp_async_pipeline<STAGES>((k_total + SLICE - 1) / SLICE, load_slice, multiply,
                              [&] { hand_over(warps); });

    // Lane (g, t) holds rows g and g + 8 x columns 2t, 2t + 1 of each 16 x 8 tile (with either
    // warp layout); n is a multiple of 4, so the two columns are both in the output or both
    // past it. Pooling: the
    // four pixels of a window are rows 4q .. 4q + 3 of a tile, lanes g ^ 1 and g ^ 2 hold the
    // other three, and every lane takes part in the shuffles before any skips its store.
    WHORL_UNROLL
    for (int mi = 0; mi < Warps::MI; ++mi) {
        WHORL_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int p = p0 + warps.row + mi * Warps::ROW_STEP + g + 8 * half;
            const GridPixel at = grid_pixel(p, grid_h, grid_w, pooling);
            const int row = out_stride * at.row + out_row, col = out_stride * at.col + out_col;
            const size_t pixel = (size_t(at.image * out_h + row) * out_w + col) * n;
            WHORL_UNROLL
            for (int ni = 0; ni < Warps::NI; ++ni) {
                const int c = n0 + warps.column + ni * 8 + 2 * t;
                const bool stored = p < pixels && c < n;
                const float* slope = stored ? slope_at : nullptr;
                float2 pair;
                pair.x = epilogue_output(acc[mi][ni][2 * half] + (bias && c < n ? bias[c] : 0.0f),
                                         activation, slope, pixel + c);
                pair.y = epilogue_output(
                    acc[mi][ni][2 * half + 1] + (bias && c < n ? bias[c + 1] : 0.0f), activation,
                    slope, pixel + c + 1);
                if (stored) *reinterpret_cast<float2*>(out + pixel + c) = pair;
                if (!pooling) continue;
                // Corner g % 4 of its window: pair it with corner ^ 1, then the pairs.
                WHORL_UNROLL
                for (int step = 1; step <= 2; step *= 2) {
                    const float2 other{__shfl_xor_sync(0xffffffffu, pair.x, 4 * step),
                                       __shfl_xor_sync(0xffffffffu, pair.y, 4 * step)};
                    const bool first = (g & step) == 0;
                    pair.x = first ? first_max_of_two(pair.x, other.x)
                                   : first_max_of_two(other.x, pair.x);
                    pair.y = first ? first_max_of_two(pair.y, other.y)
                                   : first_max_of_two(other.y, pair.y);
                }
                if (stored && g % 4 == 0)
                    *reinterpret_cast<float2*>(pooled + size_t(p / 4) * n + c) = pair;
            }
        }
    }
}

// The entry points, one tile of one layout each: WHORL_GATHERED_GEMM(Warps, POOLING) runs the
// kernel's tile on layout Warps, pooling in the epilogue or not.
#define WHORL_GATHERED_GEMM(Warps, POOLING)                                                      \
    tf32_gathered_gemm_tile<Warps, TF32_STAGES, POOLING>(WHORL_GATHERED_GEMM_ARGS,               \
                                                         POOLING ? pooled : nullptr)

// TF32. The 128 x 128 tile, in eight warps of 64 x 32 (_wide) or four of 64 x 64
// (_wide_four_warps), on slices of TF32_SLICE or TF32_LONG_SLICE (_long) of K. Grid:
// (ceil(pixels / TF32_WIDE_TILE_P), ceil(n / TF32_WIDE_TILE_N)); block WHORL_THREADS or
// TF32_FOUR_WARPS_THREADS; dynamic shared memory TF32_WIDE_SHARED_FLOATS or, on the long
// slices, TF32_WIDE_LONG_SHARED_FLOATS (96 KiB: within the 99 KiB a block may have on sm_89;
// above 48 KiB the launch opts in).
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_tf32_wide(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_WIDE_TILE_P, TF32_WIDE_TILE_N, 32, WHORL_THREADS, TF32_SLICE,
                               Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_tf32_wide_long(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_WIDE_TILE_P, TF32_WIDE_TILE_N, 32, WHORL_THREADS,
                               TF32_LONG_SLICE, Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_gathered_gemm_tf32_wide_four_warps(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_WIDE_TILE_P, TF32_WIDE_TILE_N, 64, TF32_FOUR_WARPS_THREADS,
                               TF32_SLICE, Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_gathered_gemm_tf32_wide_four_warps_long(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_WIDE_TILE_P, TF32_WIDE_TILE_N, 64, TF32_FOUR_WARPS_THREADS,
                               TF32_LONG_SLICE, Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

// The 256 x 64 tile in eight warps of 64 x 32 or four of 64 x 64. Grid: (ceil(pixels /
// TF32_TILE_P), ceil(n / TF32_TILE_N)); block WHORL_THREADS or TF32_FOUR_WARPS_THREADS; dynamic
// shared memory TF32_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_tf32(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_TILE_P, TF32_TILE_N, 32, WHORL_THREADS, TF32_SLICE,
                               Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_gathered_gemm_tf32_four_warps(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_TILE_P, TF32_TILE_N, 64, TF32_FOUR_WARPS_THREADS, TF32_SLICE,
                               Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

// The 256 x 32 tile in eight warps of 32 x 32 or four of 64 x 32. Grid: (ceil(pixels /
// TF32_NARROW_TILE_P), ceil(n / TF32_NARROW_TILE_N)); block WHORL_THREADS or
// TF32_FOUR_WARPS_THREADS; dynamic shared memory TF32_NARROW_SHARED_FLOATS.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_tf32_narrow(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_NARROW_TILE_P, TF32_NARROW_TILE_N, 32, WHORL_THREADS,
                               TF32_SLICE, Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_gathered_gemm_tf32_narrow_four_warps(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_NARROW_TILE_P, TF32_NARROW_TILE_N, 32, TF32_FOUR_WARPS_THREADS,
                               TF32_SLICE, Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, false);
}

// BF16: the same tiles on slices of TF32_SLICE (grids, blocks and shared memory as the TF32
// kernels of the same name but _bf16 for _tf32).
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_bf16_wide(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_WIDE_TILE_P, TF32_WIDE_TILE_N, 32, WHORL_THREADS, TF32_SLICE,
                               Operands::Bf16>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_gathered_gemm_bf16_wide_four_warps(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_WIDE_TILE_P, TF32_WIDE_TILE_N, 64, TF32_FOUR_WARPS_THREADS,
                               TF32_SLICE, Operands::Bf16>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_bf16(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_TILE_P, TF32_TILE_N, 32, WHORL_THREADS, TF32_SLICE,
                               Operands::Bf16>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_gathered_gemm_bf16_four_warps(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_TILE_P, TF32_TILE_N, 64, TF32_FOUR_WARPS_THREADS, TF32_SLICE,
                               Operands::Bf16>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_gathered_gemm_bf16_narrow(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_NARROW_TILE_P, TF32_NARROW_TILE_N, 32, WHORL_THREADS,
                               TF32_SLICE, Operands::Bf16>;
    WHORL_GATHERED_GEMM(Warps, false);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_gathered_gemm_bf16_narrow_four_warps(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_NARROW_TILE_P, TF32_NARROW_TILE_N, 32, TF32_FOUR_WARPS_THREADS,
                               TF32_SLICE, Operands::Bf16>;
    WHORL_GATHERED_GEMM(Warps, false);
}

// The 256 x 64 tile in eight warps pooling in its epilogue (conv2 and pool2), the grid in
// window-major order; the other tiles leave `pooled` null (conv2d.cu says why). Grid, block and
// shared memory as conv2d_gathered_gemm_tf32's; compiled for TF32_POOLED_BLOCKS blocks an SM.
extern "C" __global__ void __launch_bounds__(WHORL_THREADS, TF32_POOLED_BLOCKS)
conv2d_gathered_gemm_tf32_pooled(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_TILE_P, TF32_TILE_N, 32, WHORL_THREADS, TF32_SLICE,
                               Operands::Tf32>;
    WHORL_GATHERED_GEMM(Warps, true);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS, TF32_POOLED_BLOCKS)
conv2d_gathered_gemm_bf16_pooled(WHORL_GATHERED_GEMM_PARAMS) {
    using Warps = MmaSyncWarps<TF32_TILE_P, TF32_TILE_N, 32, WHORL_THREADS, TF32_SLICE,
                               Operands::Bf16>;
    WHORL_GATHERED_GEMM(Warps, true);
}

// Hopper's warpgroup tiles (WgmmaWarpgroups, sm_90a only: elsewhere these kernels trap, and
// the backend never offers them): 128 x 128 in two warpgroups of 64 x 128 (wgmma of 64 columns:
// 128 columns would need more than 128 registers, and so one block an SM) for more than 64
// output channels, or in one warpgroup of two 64 x 128 blocks (_one_warpgroup, by wgmma of 128
// columns: twice the wgmma per copy, barrier and ldmatrix address of a warp, for half the warps
// to hide latency);
// 128 x 64 in two of 64 x 64 for 33-64, plain or pooling in the epilogue.
// Grid: (ceil(pixels / 128), ceil(n / TILE_N)); block TF32_WGMMA_THREADS (one warpgroup:
// TF32_WGMMA_ONE_WARPGROUP_THREADS); dynamic shared memory TF32_WGMMA_WIDE_SHARED_FLOATS or
// TF32_WGMMA_SHARED_FLOATS.
#define TF32_WGMMA_THREADS 256
#define TF32_WGMMA_ONE_WARPGROUP_THREADS 128
#define TF32_WGMMA_TILE_P 128
#define TF32_WGMMA_WIDE_TILE_N 128
#define TF32_WGMMA_TILE_N 64
#define TF32_WGMMA_ALIGNMENT_FLOATS 256
// Blocks an SM the two-warpgroup 128 x 128 tile is compiled for (at most 128 registers a
// thread), as its shared memory allows.
#define TF32_WGMMA_BLOCKS 2
#define TF32_WGMMA_WIDE_SHARED_FLOATS (TF32_STAGES * TF32_LONG_SLICE * (TF32_WGMMA_TILE_P + TF32_WGMMA_WIDE_TILE_N) + TF32_WGMMA_ALIGNMENT_FLOATS)
#define TF32_WGMMA_SHARED_FLOATS (TF32_STAGES * TF32_LONG_SLICE * (TF32_WGMMA_TILE_P + TF32_WGMMA_TILE_N) + TF32_WGMMA_ALIGNMENT_FLOATS)

#ifdef WHORL_WARPGROUP_MMA
#define WHORL_WGMMA_TILE(TILE_N, THREADS, WGMMA_N, POOLING)                                      \
    using Warps = WgmmaWarpgroups<TF32_WGMMA_TILE_P, TILE_N, THREADS, WGMMA_N>;                  \
    WHORL_GATHERED_GEMM(Warps, POOLING)
#else
#define WHORL_WGMMA_TILE(TILE_N, THREADS, WGMMA_N, POOLING) __trap()
#endif

extern "C" __global__ void __launch_bounds__(TF32_WGMMA_THREADS, TF32_WGMMA_BLOCKS)
conv2d_gathered_gemm_tf32_wgmma_wide(WHORL_GATHERED_GEMM_PARAMS) {
    WHORL_WGMMA_TILE(TF32_WGMMA_WIDE_TILE_N, TF32_WGMMA_THREADS, 64, false);
}

extern "C" __global__ void __launch_bounds__(TF32_WGMMA_ONE_WARPGROUP_THREADS)
conv2d_gathered_gemm_tf32_wgmma_wide_one_warpgroup(WHORL_GATHERED_GEMM_PARAMS) {
    WHORL_WGMMA_TILE(TF32_WGMMA_WIDE_TILE_N, TF32_WGMMA_ONE_WARPGROUP_THREADS, 128, false);
}

extern "C" __global__ void __launch_bounds__(TF32_WGMMA_THREADS)
conv2d_gathered_gemm_tf32_wgmma(WHORL_GATHERED_GEMM_PARAMS) {
    WHORL_WGMMA_TILE(TF32_WGMMA_TILE_N, TF32_WGMMA_THREADS, 64, false);
}

extern "C" __global__ void __launch_bounds__(TF32_WGMMA_THREADS)
conv2d_gathered_gemm_tf32_wgmma_pooled(WHORL_GATHERED_GEMM_PARAMS) {
    WHORL_WGMMA_TILE(TF32_WGMMA_TILE_N, TF32_WGMMA_THREADS, 64, true);
}

// The gathered GEMM's B operand from weights [k][n] (a kernel, its flip or a phase): transposed
// to [n][k], so a 16-byte copy is 4 of K and ldmatrix reads the fragments, and rounded to TF32
// (or with `bf16` non-zero to BF16) once per GEMM instead of at every fragment read (the bits
// the mma multiplied before). One thread per element of out: out[c][r] = round(weights[r][c]).
extern "C" __global__ void tensor_core_weights_k_major(const float* __restrict__ weights, int k,
                                                       int n, int bf16, float* __restrict__ out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= k * n) return;
    const int c = i / k, r = i % k;
    const float weight = weights[size_t(r) * n + c];
    out[i] = bf16 ? bf16_round(weight) : __uint_as_float(tf32_round(weight));
}

// Kernel-gradient partials (conv2d_filter_partials) on tensor cores: partial[chunk, k, c] = sum
// over the chunk's grid pixels p of window(p)[k] * second[p, c], with ones_row a row of ones
// appended to the window (row K: the sum of second), operands rounded to TF32 (or BF16: the
// _bf16 kernels). The pixels are
// the reduction: they run in slices through a cp.async pipeline, the window as A ([pixel][row
// k] in a stage) and second as B ([pixel][column]).
#define TF32_FILTER_ROWS 128
#define TF32_FILTER_COLUMNS 64
#define TF32_FILTER_WIDE_COLUMNS 128
#define TF32_FILTER_SLICE 16
#define TF32_FILTER_SHARED_FLOATS (TF32_STAGES * TF32_FILTER_SLICE * (TF32_FILTER_ROWS + 8 + TF32_FILTER_COLUMNS + 8))
#define TF32_FILTER_WIDE_SHARED_FLOATS (TF32_STAGES * TF32_FILTER_SLICE * (TF32_FILTER_ROWS + 8 + TF32_FILTER_WIDE_COLUMNS + 8))

// How a block's warps share the partials' 128 x COLUMNS tile, as the GEMM's layouts do: a
// struct of what a lane keeps and functions overloaded on it:
// - place_filter_warps(warps, warp): its first accumulator row and column;
// - multiply_filter_stage(warps, a_tile, b_tile, acc, lane): adds a stage's SLICE pixels to the
//   lane's accumulators acc[MI][NI][4], each output's products in pixel order;
// - filter_column(warps, ni, t, e): the tile column of lane (g, t)'s values e (0 or 1) of its
//   8-column block ni (the m16n8 C fragment's column 2t + e).
// Rows are alike in both: fragment rows g and g + 8 of a 16-row block are the tile's rows 2g
// and 2g + 1 (so that a lane reads a[0], a[1], and a[2], a[3] 4 pixels on, as 8-byte pairs).
// Both multiply in the same pixel order, so they give the same bits.

// Lane (g, t)'s values of a stage ([pixel][position], PITCH floats apart) at pixels ks + t and
// ks + t + 4 and positions from + 2g and from + 2g + 1, as stored (float32 bits), as two 8-byte
// pairs: v = (t, 2g), (t, 2g + 1), (t + 4, 2g), (t + 4, 2g + 1). With positions the window's
// rows that is the m16n8k8 A fragment of the 16 rows from `from` and pixels ks .. + 8 (as
// the layouts pair rows); with them second's columns, the B fragments of the 8-column blocks 2m
// and 2m + 1 from `from` = 16m are (v[0], v[2]) and (v[1], v[3]).
template <int PITCH>
__device__ __forceinline__ void load_filter_pairs(unsigned (&v)[4], const float* tile, int ks,
                                                  int from, int g, int t) {
    const float* pixels = tile + (ks + t) * PITCH + from + 2 * g;
    const float2 first = *reinterpret_cast<const float2*>(pixels);
    const float2 fifth = *reinterpret_cast<const float2*>(pixels + 4 * PITCH);
    v[0] = __float_as_uint(first.x);
    v[1] = __float_as_uint(first.y);
    v[2] = __float_as_uint(fifth.x);
    v[3] = __float_as_uint(fifth.y);
}

// Warp tiles of mma.sync: THREADS / 32 warps, COLUMNS / WARP_N along the columns, each a
// (128 / warps along the rows) x WARP_N tile of 16 x 8 mma tiles (32 x 32 or 64 x 32 in eight
// warps, 64 x 64 in four); slices of TF32_FILTER_SLICE pixels, TF32_STAGES stages. B's
// fragments are read from the stage: fragment column g of 8-column blocks 2m and 2m + 1 is the
// tile's column 16m + 2g and 16m + 2g + 1, one 8-byte pair for b[2m][i] and b[2m + 1][i].
template <int COLUMNS_, int WARP_N, int THREADS_, Operands OPERANDS_>
struct FilterMmaSyncWarps {
    static constexpr int COLUMNS = COLUMNS_, THREADS = THREADS_;
    static constexpr Operands OPERANDS = OPERANDS_;
    static constexpr int SLICE = TF32_FILTER_SLICE, STAGES = TF32_STAGES;
    static constexpr int WARPS_N = COLUMNS / WARP_N, WARPS_M = THREADS / 32 / WARPS_N;
    static constexpr int MI = TF32_FILTER_ROWS / WARPS_M / 16, NI = WARP_N / 8;
    int row, column;
};

template <int COLUMNS, int WARP_N, int THREADS, Operands OPERANDS>
__device__ __forceinline__ void place_filter_warps(
    FilterMmaSyncWarps<COLUMNS, WARP_N, THREADS, OPERANDS>& warps, int warp) {
    using Warps = FilterMmaSyncWarps<COLUMNS, WARP_N, THREADS, OPERANDS>;
    warps.row = (warp / Warps::WARPS_N) * (TF32_FILTER_ROWS / Warps::WARPS_M);
    warps.column = (warp % Warps::WARPS_N) * WARP_N;
}

template <int COLUMNS, int WARP_N, int THREADS, Operands OPERANDS, int MI, int NI>
__device__ __forceinline__ void multiply_filter_stage(
    const FilterMmaSyncWarps<COLUMNS, WARP_N, THREADS, OPERANDS>& warps, const float* a_tile,
    const float* b_tile, float (&acc)[MI][NI][4], int lane) {
    constexpr int PITCH_A = TF32_FILTER_ROWS + 8, PITCH_B = COLUMNS + 8;
    constexpr int K = MMA_K<OPERANDS>, K8 = K / 8;
    const int g = lane / 4, t = lane % 4;
    WHORL_UNROLL
    for (int ks = 0; ks < TF32_FILTER_SLICE; ks += K) {
        unsigned a[MI][4], b[NI][2];
        WHORL_UNROLL
        for (int mi = 0; mi < MI; ++mi) {
            unsigned read[K8][4];
            WHORL_UNROLL
            for (int h = 0; h < K8; ++h)
                load_filter_pairs<PITCH_A>(read[h], a_tile, ks + 8 * h, warps.row + mi * 16, g, t);
            a_operand<OPERANDS>(a[mi], read);
        }
        WHORL_UNROLL
        for (int ni = 0; ni < NI; ni += 2) {
            unsigned read[2][K8][2];
            WHORL_UNROLL
            for (int h = 0; h < K8; ++h) {
                unsigned v[4];
                load_filter_pairs<PITCH_B>(v, b_tile, ks + 8 * h, warps.column + ni * 8, g, t);
                read[0][h][0] = v[0];
                read[0][h][1] = v[2];
                read[1][h][0] = v[1];
                read[1][h][1] = v[3];
            }
            b_operand<OPERANDS, false>(b[ni], read[0]);
            b_operand<OPERANDS, false>(b[ni + 1], read[1]);
        }
        WHORL_UNROLL
        for (int mi = 0; mi < MI; ++mi) {
            WHORL_UNROLL
            for (int ni = 0; ni < NI; ++ni) tensor_core_mma<OPERANDS>(acc[mi][ni], a[mi], b[ni]);
        }
    }
}

template <int COLUMNS, int WARP_N, int THREADS, Operands OPERANDS>
__device__ __forceinline__ int filter_column(
    const FilterMmaSyncWarps<COLUMNS, WARP_N, THREADS, OPERANDS>& warps, int ni, int t, int e) {
    return warps.column + 16 * (ni / 2) + 2 * (2 * t + e) + ni % 2;
}

// The partials' warpgroup tiles (below): slices of 32 pixels in two stages, then the transposed
// B tile and room to align it.
#define TF32_WGMMA_FILTER_SLICE 32
#define TF32_WGMMA_FILTER_STAGES 2
#define TF32_WGMMA_FILTER_SHARED_FLOATS (TF32_WGMMA_FILTER_STAGES * TF32_WGMMA_FILTER_SLICE * (TF32_FILTER_ROWS + 8 + TF32_FILTER_COLUMNS + 8) + TF32_FILTER_COLUMNS * TF32_WGMMA_FILTER_SLICE + TF32_WGMMA_ALIGNMENT_FLOATS)
#define TF32_WGMMA_FILTER_WIDE_SHARED_FLOATS (TF32_WGMMA_FILTER_STAGES * TF32_WGMMA_FILTER_SLICE * (TF32_FILTER_ROWS + 8 + TF32_FILTER_WIDE_COLUMNS + 8) + TF32_FILTER_WIDE_COLUMNS * TF32_WGMMA_FILTER_SLICE + TF32_WGMMA_ALIGNMENT_FLOATS)

#ifdef WHORL_WARPGROUP_MMA
// Warpgroups of wgmma (Hopper, sm_90a): two warpgroups of 64 rows x all COLUMNS columns, warp q
// of a warpgroup rows 16q .. + 16, one wgmma of COLUMNS columns per 8 pixels; slices of 32
// pixels, two stages (85 KiB of shared memory with 128 columns; its 130 registers a thread
// leave one block an SM, where 128 would spill). The tensor cores read B K-major only (pixels
// contiguous per column), and second comes pixel-major, so each stage's B is transposed (and
// rounded to TF32) into a 128-byte-swizzled tile after the stages: thread t moves 4 pixels x 1
// column at a time, column t % COLUMNS (a quarter-warp's 8 columns fill the 32 banks on both
// sides), fences its stores for the asynchronous proxy, and a barrier hands the tile to the
// wgmma, which are retired before the next stage's transpose.
template <int COLUMNS_>
struct FilterWgmmaWarpgroups {
    static constexpr int COLUMNS = COLUMNS_, THREADS = 256;
    static constexpr int SLICE = TF32_WGMMA_FILTER_SLICE, STAGES = TF32_WGMMA_FILTER_STAGES;
    static constexpr int MI = 1, NI = COLUMNS / 8;
    static_assert(COLUMNS == 64 || COLUMNS == 128, "one wgmma of 64 or 128 columns");
    int row, column;
};

template <int COLUMNS>
__device__ __forceinline__ void place_filter_warps(FilterWgmmaWarpgroups<COLUMNS>& warps,
                                                   int warp) {
    warps.row = (warp / 4) * 64 + (warp % 4) * 16;
    warps.column = 0;
}

template <int COLUMNS, int MI, int NI>
__device__ __forceinline__ void multiply_filter_stage(const FilterWgmmaWarpgroups<COLUMNS>& warps,
                                                      const float* a_tile, const float* b_tile,
                                                      float (&acc)[MI][NI][4], int lane) {
    using Warps = FilterWgmmaWarpgroups<COLUMNS>;
    constexpr int PITCH_A = TF32_FILTER_ROWS + 8, PITCH_B = COLUMNS + 8, SLICE = Warps::SLICE;
    // The transposed tile: [column][pixel], after the stages, 1024-byte aligned.
    WHORL_DYNAMIC_SHARED(float, shared);
    float* b_k_major = swizzle_aligned(
        shared + Warps::STAGES * SLICE * (PITCH_A + PITCH_B));
    WHORL_UNROLL
    for (int r = 0; r < COLUMNS * SLICE / 4 / Warps::THREADS; ++r) {
        const int item = threadIdx.x + r * Warps::THREADS;
        const int column = item % COLUMNS, pixel = 4 * (item / COLUMNS);
        const float* from = b_tile + pixel * PITCH_B + column;
        const float4 values{__uint_as_float(tf32_round(from[0])),
                            __uint_as_float(tf32_round(from[PITCH_B])),
                            __uint_as_float(tf32_round(from[2 * PITCH_B])),
                            __uint_as_float(tf32_round(from[3 * PITCH_B]))};
        store_wgmma_operand(b_k_major + tf32_tile_offset<SLICE>(column, pixel), values);
    }
    fence_async_proxy_shared();
    __syncthreads();
    const int g = lane / 4, t = lane % 4;
    unsigned a[SLICE / 8][MI][4];
    WHORL_UNROLL
    for (int ks = 0; ks < SLICE; ks += 8) {
        load_filter_pairs<PITCH_A>(a[ks / 8][0], a_tile, ks, warps.row, g, t);
        round_to_tf32(a[ks / 8][0]);
    }
    wgmma_stage<COLUMNS>(acc, a, b_k_major);
}

template <int COLUMNS>
__device__ __forceinline__ int filter_column(const FilterWgmmaWarpgroups<COLUMNS>&, int ni, int t,
                                             int e) {
    return 8 * ni + 2 * t + e;
}
#endif

// One 128 x COLUMNS tile of the partials per block of Warps::THREADS threads (T), pixels in
// slices of Warps::SLICE (S) through Warps::STAGES stages.
// Copying: thread t fills, for pixels t / 16 + (T / 16) c of each slice, 4 window values at
// rows 4 (t % 16) + 64 i and 4 values of second at columns 4 (t % 16) + 64 j; the ones row is
// plain stores, made once.
template <typename Warps>
__device__ __forceinline__ void tf32_filter_partials_tile(
    const float* __restrict__ src, int grid_n, int grid_h, int grid_w, int src_h, int src_w,
    int src_c, int window, int stride, int origin, const float* __restrict__ second, int n,
    int ones_row, int pixels_per_chunk, float* __restrict__ partial) {
    constexpr int ROWS = TF32_FILTER_ROWS, COLUMNS = Warps::COLUMNS, THREADS = Warps::THREADS;
    constexpr int SLICE = Warps::SLICE, STAGES = Warps::STAGES;
    constexpr int PITCH_A = ROWS + 8, PITCH_B = COLUMNS + 8;
    constexpr int A_COPIES = ROWS / 64, B_COPIES = COLUMNS / 64;
    // Pixels of a slice each thread copies, THREADS / 16 apart.
    constexpr int PIXEL_COPIES = SLICE * 16 / THREADS, PIXEL_STEP = THREADS / 16;
    WHORL_DYNAMIC_SHARED(float, shared);
    float* a_stages = shared;                            // [stage][pixel][row k]
    float* b_stages = shared + STAGES * SLICE * PITCH_A;  // [stage][pixel][column]
    const int pixels = grid_n * grid_h * grid_w;
    const int k_total = window * window * src_c;
    const int rows = ones_row ? k_total + 1 : k_total;
    const int k0 = blockIdx.x * ROWS, n0 = blockIdx.y * COLUMNS;
    const int chunk = blockIdx.z;
    const int begin = chunk * pixels_per_chunk, end = min(pixels, begin + pixels_per_chunk);
    const int thread = threadIdx.x, lane = thread % 32;
    const int g = lane / 4, t = lane % 4;
    Warps warps;
    place_filter_warps(warps, thread / 32);

    // This thread's copies, for the pixels at slice offsets copy_pixel + PIXEL_STEP c: the
    // window at rows k and k + 64 (their taps and channels fixed for the block) and second at
    // columns n0 + offset + 64 j.
    const int copy_pixel = thread / 16, offset = (thread % 16) * 4;
    // Each window copy's tap (its row and column relative to the pixel's window origin) and
    // its offset in src from that origin.
    int k[A_COPIES], tap_row[A_COPIES], tap_col[A_COPIES], tap_offset[A_COPIES];
    WHORL_UNROLL
    for (int i = 0; i < A_COPIES; ++i) {
        k[i] = k0 + offset + 64 * i;
        int tap = k[i] / src_c;
        tap_row[i] = tap / window + origin;
        tap_col[i] = tap % window + origin;
        tap_offset[i] = (tap_row[i] * src_w + tap_col[i]) * src_c + k[i] % src_c;
    }
    // Which copies exist: past the window (k >= K: the ones row at k = K with ones_row, zeros
    // after it) and past second (zeros), every slice holds the same values, stored once in
    // every stage (a pixel past the chunk multiplies them by the zeros its other operand is
    // filled with), and nothing is copied there.
    bool window_copies[A_COPIES], second_copies[B_COPIES];
    WHORL_UNROLL
    for (int i = 0; i < A_COPIES; ++i) window_copies[i] = k[i] < k_total;
    WHORL_UNROLL
    for (int j = 0; j < B_COPIES; ++j) second_copies[j] = n0 + offset + 64 * j < n;
    for (int stage = 0; stage < STAGES; ++stage)
        for (int c = 0; c < PIXEL_COPIES; ++c) {
            const int slot = stage * SLICE + copy_pixel + PIXEL_STEP * c;
            WHORL_UNROLL
            for (int i = 0; i < A_COPIES; ++i)
                if (!window_copies[i]) {
                    float* target = a_stages + slot * PITCH_A + offset + 64 * i;
                    target[0] = k[i] == k_total && ones_row ? 1.0f : 0.0f;
                    target[1] = target[2] = target[3] = 0.0f;
                }
            WHORL_UNROLL
            for (int j = 0; j < B_COPIES; ++j)
                if (!second_copies[j]) {
                    float* target = b_stages + slot * PITCH_B + offset + 64 * j;
                    target[0] = target[1] = target[2] = target[3] = 0.0f;
                }
        }
    // Each pixel copy's cursor and where its row of second is, both moved on a slice at a time.
    GridCursor at[PIXEL_COPIES];
    const float* second_row[PIXEL_COPIES];
    WHORL_UNROLL
    for (int c = 0; c < PIXEL_COPIES; ++c) {
        at[c] = grid_cursor(begin + copy_pixel + PIXEL_STEP * c, grid_h, grid_w);
        second_row[c] = second + size_t(at[c].index) * n + n0 + offset;
    }

    auto load_slice = [&](int, int stage) {
        WHORL_UNROLL
        for (int c = 0; c < PIXEL_COPIES; ++c) {
            const GridCursor& here = at[c];
            const bool pixel_inside = here.index < end;
            // The pixel's window origin in src (row and column of tap (0, 0) less `origin`).
            const int source_row = stride * here.row, source_col = stride * here.col;
            const int origin_offset =
                ((here.image * src_h + source_row) * src_w + source_col) * src_c;
            const int slot = stage * SLICE + copy_pixel + PIXEL_STEP * c;
            float* a_target = a_stages + slot * PITCH_A + offset;
            WHORL_UNROLL
            for (int i = 0; i < A_COPIES; ++i) {
                if (!window_copies[i]) continue;
                // Unsigned: a row or column before the image is past it too.
                const bool inside = pixel_inside &&
                                    unsigned(source_row + tap_row[i]) < unsigned(src_h) &&
                                    unsigned(source_col + tap_col[i]) < unsigned(src_w);
                cp_async_16(a_target + 64 * i,
                            inside ? src + (origin_offset + tap_offset[i]) : src, !inside);
            }
            float* b_target = b_stages + slot * PITCH_B + offset;
            WHORL_UNROLL
            for (int j = 0; j < B_COPIES; ++j) {
                if (!second_copies[j]) continue;
                cp_async_16(b_target + 64 * j, pixel_inside ? second_row[c] + 64 * j : second,
                            !pixel_inside);
            }
            second_row[c] += size_t(SLICE) * n;
            advance_cursor(at[c], SLICE, grid_h, grid_w);
        }
    };

    float acc[Warps::MI][Warps::NI][4] = {};
    auto multiply = [&](int stage) {
        multiply_filter_stage(warps, a_stages + stage * SLICE * PITCH_A,
                              b_stages + stage * SLICE * PITCH_B, acc, lane);
    };
    cp_async_pipeline<STAGES>((end - begin + SLICE - 1) / SLICE, load_slice, multiply);

    // Lane (g, t) holds fragment rows g and g + 8 x columns 2t, 2t + 1 of each 16 x 8 tile:
    // the tile's rows 2g and 2g + 1 of the 16-row block, and the columns filter_column says.
    WHORL_UNROLL
    for (int mi = 0; mi < Warps::MI; ++mi) {
        WHORL_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int row = k0 + warps.row + mi * 16 + 2 * g + half;
            if (row >= rows) continue;
            WHORL_UNROLL
            for (int ni = 0; ni < Warps::NI; ++ni) {
                WHORL_UNROLL
                for (int e = 0; e < 2; ++e) {
                    const int column = n0 + filter_column(warps, ni, t, e);
                    if (column < n)
                        partial[(size_t(chunk) * rows + row) * n + column] =
                            acc[mi][ni][2 * half + e];
                }
            }
        }
    }
}

// The entry points, one tile of one layout each: WHORL_FILTER_PARTIALS(Warps) runs the
// kernel's tile on layout Warps.
#define WHORL_FILTER_PARTIALS(Warps)                                                             \
    tf32_filter_partials_tile<Warps>(WHORL_FILTER_PARTIALS_ARGS)

// The 128 x 64 tile in eight warps of 32 x 32, the 128 x 128 one in eight warps of 64 x 32
// (_wide) or four of 64 x 64 (_wide_four_warps), in TF32 or BF16. Grid: (ceil(rows / 128),
// ceil(n / COLUMNS), chunks); block WHORL_THREADS or TF32_FOUR_WARPS_THREADS; dynamic shared
// memory TF32_FILTER_SHARED_FLOATS or TF32_FILTER_WIDE_SHARED_FLOATS (above 48 KiB: the launch
// opts in).
extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_tf32(WHORL_FILTER_PARTIALS_PARAMS) {
    using Warps = FilterMmaSyncWarps<TF32_FILTER_COLUMNS, 32, WHORL_THREADS, Operands::Tf32>;
    WHORL_FILTER_PARTIALS(Warps);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_tf32_wide(WHORL_FILTER_PARTIALS_PARAMS) {
    using Warps = FilterMmaSyncWarps<TF32_FILTER_WIDE_COLUMNS, 32, WHORL_THREADS,
                                     Operands::Tf32>;
    WHORL_FILTER_PARTIALS(Warps);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_filter_partials_tf32_wide_four_warps(WHORL_FILTER_PARTIALS_PARAMS) {
    using Warps = FilterMmaSyncWarps<TF32_FILTER_WIDE_COLUMNS, 64, TF32_FOUR_WARPS_THREADS,
                                     Operands::Tf32>;
    WHORL_FILTER_PARTIALS(Warps);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_bf16(WHORL_FILTER_PARTIALS_PARAMS) {
    using Warps = FilterMmaSyncWarps<TF32_FILTER_COLUMNS, 32, WHORL_THREADS, Operands::Bf16>;
    WHORL_FILTER_PARTIALS(Warps);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_bf16_wide(WHORL_FILTER_PARTIALS_PARAMS) {
    using Warps = FilterMmaSyncWarps<TF32_FILTER_WIDE_COLUMNS, 32, WHORL_THREADS,
                                     Operands::Bf16>;
    WHORL_FILTER_PARTIALS(Warps);
}

extern "C" __global__ void __launch_bounds__(TF32_FOUR_WARPS_THREADS)
conv2d_filter_partials_bf16_wide_four_warps(WHORL_FILTER_PARTIALS_PARAMS) {
    using Warps = FilterMmaSyncWarps<TF32_FILTER_WIDE_COLUMNS, 64, TF32_FOUR_WARPS_THREADS,
                                     Operands::Bf16>;
    WHORL_FILTER_PARTIALS(Warps);
}

// The 128 x 64 and 128 x 128 tiles on Hopper's warpgroups (FilterWgmmaWarpgroups; sm_90a only:
// elsewhere they trap, and the backend never offers them). Grid as conv2d_filter_partials_tf32's
// and _wide's; block 256; dynamic shared memory TF32_WGMMA_FILTER_SHARED_FLOATS or
// TF32_WGMMA_FILTER_WIDE_SHARED_FLOATS.

#ifdef WHORL_WARPGROUP_MMA
#define WHORL_WGMMA_FILTER_TILE(COLUMNS)                                                        \
    using Warps = FilterWgmmaWarpgroups<COLUMNS>;                                                 \
    WHORL_FILTER_PARTIALS(Warps)
#else
#define WHORL_WGMMA_FILTER_TILE(COLUMNS) __trap()
#endif

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_tf32_wgmma(WHORL_FILTER_PARTIALS_PARAMS) {
    WHORL_WGMMA_FILTER_TILE(TF32_FILTER_COLUMNS);
}

extern "C" __global__ void __launch_bounds__(WHORL_THREADS)
conv2d_filter_partials_tf32_wgmma_wide(WHORL_FILTER_PARTIALS_PARAMS) {
    WHORL_WGMMA_FILTER_TILE(TF32_FILTER_WIDE_COLUMNS);
}
