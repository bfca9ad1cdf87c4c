// A tiled TF32 tensor-core GEMM on kernels/whorl.cuh's primitives, and the same kernel with one
// deliberate mistake each, which the emulator must catch.
//
// C[m x n] = A[m x k] B[k x n], all row-major float32, m, n, k any sizes with n and k multiples
// of 4 (rows start 16-byte aligned, as cp.async needs). Grid (ceil(n / 64), ceil(m / 64)),
// block 128 threads: 4 warps, 2 x 2 over the block's 64 x 64 tile of C, each warp 32 x 32 as
// 2 x 4 mma tiles of 16 x 8. The k dimension runs in 16-wide slices through a 3-stage shared-
// memory pipeline: cp.async fills slice s + 2 while the warps multiply slice s; copies past the
// edges of A and B are zero-filled, so partial tiles add nothing. A's fragments come from
// shared memory by ldmatrix, B's (n-contiguous, which ldmatrix cannot transpose for 32-bit
// values) by plain loads.
#include "whorl.cuh"

enum class GemmMistake {
    None,
    // a[1] and a[2] exchanged: rows g + 8 and columns t + 4 of A's fragment mixed up.
    SwappedFragment,
    // No cp.async.wait_group: the slice is read before its copies land.
    MissingWait,
    // cp.async.wait_group 2 instead of 1: the newest slice, the one read, may still be in flight.
    ShortWait,
    // No __syncthreads() after the wait: a warp reads rows other warps' copies bring in (and
    // refills a stage other warps are still reading).
    MissingBarrier,
    // Operands passed to the tensor core as raw float32 bits, not rounded to TF32.
    Unrounded,
};

template <GemmMistake mistake>
__device__ void tf32_gemm_tile(int m, int n, int k, const float* a, const float* b, float* c) {
    constexpr int kThreads = 128, kTileM = 64, kTileN = 64, kSlice = 16, kStages = 3;
    // Row pitches padded so the fragment reads of a warp hit 32 different banks.
    constexpr int kPitchA = kSlice + 4, kPitchB = kTileN + 8;
    __shared__ __align__(16) float a_slices[kStages][kTileM][kPitchA];
    __shared__ __align__(16) float b_slices[kStages][kSlice][kPitchB];

    const int thread = threadIdx.x, lane = thread % 32, warp = thread / 32;
    const int g = lane / 4, t = lane % 4;
    const int row0 = blockIdx.y * kTileM, col0 = blockIdx.x * kTileN;
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;

    // Slice `slice` of A (64 x 16: 256 copies of 4 floats) and B (16 x 64: 256) into `stage`.
    auto load_slice = [&](int slice, int stage) {
        const int k0 = slice * kSlice;
        for (int i = 0; i < kTileM * kSlice / 4 / kThreads; ++i) {
            int copy = thread + i * kThreads, row = copy / (kSlice / 4), col = copy % (kSlice / 4) * 4;
            bool inside = row0 + row < m && k0 + col < k;
            const float* source = inside ? a + size_t(row0 + row) * k + k0 + col : a;
            cp_async_16(&a_slices[stage][row][col], source, !inside);
        }
        for (int i = 0; i < kSlice * kTileN / 4 / kThreads; ++i) {
            int copy = thread + i * kThreads, row = copy / (kTileN / 4), col = copy % (kTileN / 4) * 4;
            bool inside = k0 + row < k && col0 + col < n;
            const float* source = inside ? b + size_t(k0 + row) * n + col0 + col : b;
            cp_async_16(&b_slices[stage][row][col], source, !inside);
        }
    };
    auto operand = [](float value) {
        return mistake == GemmMistake::Unrounded ? __float_as_uint(value) : tf32_round(value);
    };

    const int slices = (k + kSlice - 1) / kSlice;
    for (int stage = 0; stage < kStages - 1; ++stage) {
        if (stage < slices) load_slice(stage, stage);
        cp_async_commit();
    }
    float acc[2][4][4] = {};
    for (int slice = 0; slice < slices; ++slice) {
        // Groups committed so far: kStages - 1 + slice; all but the newest kStages - 2 hold
        // slice `slice` and the ones before it.
        if (mistake == GemmMistake::ShortWait) {
            cp_async_wait<kStages - 1>();
        } else if (mistake != GemmMistake::MissingWait) {
            cp_async_wait<kStages - 2>();
        }
        if (mistake != GemmMistake::MissingBarrier) __syncthreads();
        // The stage refilled here was read in the previous iteration, by every thread before
        // the barrier above.
        if (slice + kStages - 1 < slices) load_slice(slice + kStages - 1, (slice + kStages - 1) % kStages);
        cp_async_commit();

        const int stage = slice % kStages;
        for (int kk = 0; kk < kSlice; kk += 8) {
            unsigned a_frag[2][4], b_frag[4][2];
            for (int i = 0; i < 2; ++i) {
                // One ldmatrix per A fragment: lane l points at row l % 8 + 8 ((l / 8) % 2),
                // columns 4 (l / 16) .. + 4 of the fragment's 16 x 8 block.
                int row = warp_row + i * 16 + lane % 8 + (lane / 8) % 2 * 8;
                ldmatrix_x4(a_frag[i], &a_slices[stage][row][kk + lane / 16 * 4]);
                for (int r = 0; r < 4; ++r) a_frag[i][r] = operand(__uint_as_float(a_frag[i][r]));
                if (mistake == GemmMistake::SwappedFragment) {
                    unsigned swapped = a_frag[i][1];
                    a_frag[i][1] = a_frag[i][2];
                    a_frag[i][2] = swapped;
                }
            }
            for (int j = 0; j < 4; ++j) {
                const int col = warp_col + j * 8 + g;
                b_frag[j][0] = operand(b_slices[stage][kk + t][col]);
                b_frag[j][1] = operand(b_slices[stage][kk + t + 4][col]);
            }
            for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 4; ++j) mma_tf32_m16n8k8(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
        }
    }

    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j)
            for (int r = 0; r < 4; ++r) {
                int row = row0 + warp_row + i * 16 + g + (r / 2) * 8;
                int col = col0 + warp_col + j * 8 + 2 * t + r % 2;
                if (row < m && col < n) c[size_t(row) * n + col] = acc[i][j][r];
            }
}

extern "C" __global__ void __launch_bounds__(128)
    tf32_gemm(int m, int n, int k, const float* a, const float* b, float* c) {
    tf32_gemm_tile<GemmMistake::None>(m, n, k, a, b, c);
}

extern "C" __global__ void __launch_bounds__(128)
    broken_tf32_gemm_swapped_fragment(int m, int n, int k, const float* a, const float* b, float* c) {
    tf32_gemm_tile<GemmMistake::SwappedFragment>(m, n, k, a, b, c);
}

extern "C" __global__ void __launch_bounds__(128)
    broken_tf32_gemm_missing_wait(int m, int n, int k, const float* a, const float* b, float* c) {
    tf32_gemm_tile<GemmMistake::MissingWait>(m, n, k, a, b, c);
}

extern "C" __global__ void __launch_bounds__(128)
    broken_tf32_gemm_short_wait(int m, int n, int k, const float* a, const float* b, float* c) {
    tf32_gemm_tile<GemmMistake::ShortWait>(m, n, k, a, b, c);
}

extern "C" __global__ void __launch_bounds__(128)
    broken_tf32_gemm_missing_barrier(int m, int n, int k, const float* a, const float* b, float* c) {
    tf32_gemm_tile<GemmMistake::MissingBarrier>(m, n, k, a, b, c);
}

extern "C" __global__ void __launch_bounds__(128)
    broken_tf32_gemm_unrounded(int m, int n, int k, const float* a, const float* b, float* c) {
    tf32_gemm_tile<GemmMistake::Unrounded>(m, n, k, a, b, c);
}
