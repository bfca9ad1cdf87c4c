// kernels/whorl.cuh's warpgroup MMA (wgmma) for the emulator's tests: a product of A by B per
// warpgroup, the same product by mma.sync, and the wgmma kernel with one deliberate mistake
// each, which the emulator must catch.
//
// D[rows x 64] = A[rows x 32] B[32 x 64] in float32, rows = 64 per warpgroup of the block (128
// or 256 threads). A is row-major, rounded to TF32 here with tf32_round; B comes K-major
// (b_k_major[n][k] = B[k][n], 64 x 32) and already rounded, since the tensor cores read it from
// shared memory as it is. B goes to dynamic shared memory (the launch gives 9 KiB: its 8 KiB
// and room to align it to 1024 bytes) by cp.async, as 64 rows of 128 bytes with the 128-byte
// swizzle (16-byte chunk c of row n at chunk c ^ (n % 8)). Warp q of warpgroup w multiplies
// rows 64w + 16q .. + 16 with four wgmma m64n64k8, 8 of K each in k order, committed as two
// groups of two.
#include "whorl.cuh"

enum class WgmmaMistake {
    None,
    // D read before the wgmma_wait that retires its wgmma.
    ReadBeforeWait,
    // D read after wgmma_wait<1>: the second group, the end of the chain, may be in flight.
    ShortWait,
    // A descriptor of layout type 0 (no swizzle) for B stored with the 128-byte swizzle.
    NoSwizzleDescriptor,
    // A descriptor whose groups of 8 rows are 128 bytes apart (its SBO), not 1024.
    StrideOf128,
    // A passed to the tensor cores as its float32 bits, not rounded to TF32.
    Unrounded,
    // No fence_async_proxy_shared after the copies of B land.
    NoProxyFence,
    // No wgmma_fence before the first wgmma.
    NoWgmmaFence,
    // B's shared memory overwritten with zeros between the wgmma's issue and its wait.
    OverwrittenB,
    // B copied again by cp.async between the wgmma's issue and its wait, with the same values
    // but no fence_async_proxy_shared after they land.
    UnfencedRefill,
    // The second group never committed: no wgmma_wait retires it.
    NoCommit,
    // No wgmma_wait: the kernel ends with its wgmma in flight.
    NoWait,
};

// The first row of A and D that a warp's fragments hold: 16 rows per warp, 64 per warpgroup.
__device__ int first_row_of_warp(int warp) { return 64 * (warp / 4) + 16 * (warp % 4); }

// Lane (g, t)'s m16n8k8 A fragments of rows row0 .. + 16 of A (32 columns), one for each 8 of K:
// fragments[ks] = A[row0 + g][8ks + t], A[row0 + g + 8][8ks + t], A[row0 + g][8ks + t + 4],
// A[row0 + g + 8][8ks + t + 4], rounded to TF32 when `round`, else as their float32 bits.
__device__ void load_a_fragments(unsigned (&fragments)[4][4], const float* a, int row0, int lane,
                                 bool round) {
    const int g = lane / 4, t = lane % 4;
    for (int ks = 0; ks < 4; ++ks) {
        const float* at = a + (row0 + g) * 32 + 8 * ks + t;
        const float values[4] = {at[0], at[8 * 32], at[4], at[8 * 32 + 4]};
        for (int i = 0; i < 4; ++i)
            fragments[ks][i] = round ? tf32_round(values[i]) : __float_as_uint(values[i]);
    }
}

// Stores lane (g, t)'s accumulators of rows row0 .. + 16 of D (COLUMNS columns):
// acc[4j + i] = D[row0 + g + 8 (i / 2)][8j + 2t + i % 2].
template <int COLUMNS>
__device__ void store_d(float* d, const float (&acc)[COLUMNS / 2], int row0, int lane) {
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < COLUMNS / 8; ++j)
        for (int i = 0; i < 4; ++i)
            d[(row0 + g + 8 * (i / 2)) * COLUMNS + 8 * j + 2 * t + i % 2] = acc[4 * j + i];
}

template <WgmmaMistake mistake>
__device__ void warpgroup_product_tile(const float* a, const float* b_k_major, float* d) {
    WHORL_DYNAMIC_SHARED(float, shared);
    // The descriptor's swizzle needs B's groups of 8 rows 1024-byte aligned.
    float* tile = swizzle_aligned(shared);
    const int thread = threadIdx.x, lane = thread % 32, warp = thread / 32;
    auto copy_b = [&] {
        for (int chunk = thread; chunk < 64 * 8; chunk += blockDim.x) {
            const int n = chunk / 8, c = chunk % 8;
            cp_async_16(tile + n * 32 + 4 * (c ^ (n % 8)), b_k_major + n * 32 + 4 * c, false);
        }
        cp_async_commit();
        cp_async_wait<0>();
    };
    copy_b();
    if (mistake != WgmmaMistake::NoProxyFence) fence_async_proxy_shared();
    __syncthreads();

    const int row0 = first_row_of_warp(warp);
    unsigned a_fragments[4][4];
    load_a_fragments(a_fragments, a, row0, lane, mistake != WgmmaMistake::Unrounded);
    float acc[32] = {};
    if (mistake != WgmmaMistake::NoWgmmaFence) wgmma_fence();
    for (int ks = 0; ks < 4; ++ks) {
        // The swizzle applies to the address bits: values 8ks .. + 8 of every row are the tile's
        // at tile + 8ks.
        unsigned long long descriptor = wgmma_descriptor_128b(tile + 8 * ks);
        if (mistake == WgmmaMistake::NoSwizzleDescriptor) descriptor &= ~(3ull << 62);
        if (mistake == WgmmaMistake::StrideOf128)
            descriptor = (descriptor & ~(0x3fffull << 32)) | (128ull >> 4 << 32);
        wgmma_tf32_m64n64k8(acc, a_fragments[ks], descriptor);
        if (ks % 2 == 1 && !(mistake == WgmmaMistake::NoCommit && ks == 3)) wgmma_commit();
    }
    if (mistake == WgmmaMistake::ReadBeforeWait) store_d<64>(d, acc, row0, lane);
    if (mistake == WgmmaMistake::OverwrittenB) {
        // Every warp has issued its wgmma; the block then reuses B's memory.
        __syncthreads();
        for (int i = thread; i < 64 * 32; i += blockDim.x) tile[i] = 0.0f;
        __syncthreads();
    }
    if (mistake == WgmmaMistake::UnfencedRefill) {
        __syncthreads();
        copy_b();
        __syncthreads();
    }
    if (mistake != WgmmaMistake::NoWait) {
        wgmma_wait<1>();
        if (mistake == WgmmaMistake::ShortWait) store_d<64>(d, acc, row0, lane);
        wgmma_wait<0>();
    }
    if (mistake != WgmmaMistake::ReadBeforeWait && mistake != WgmmaMistake::ShortWait)
        store_d<64>(d, acc, row0, lane);
}

extern "C" __global__ void warpgroup_product(const float* a, const float* b_k_major, float* d) {
    warpgroup_product_tile<WgmmaMistake::None>(a, b_k_major, d);
}

// The product by one wgmma m64n128k8 per 8 of K, over B's 64 columns twice (rows n and n + 64
// of the shared tile are both B's column n): D (rows x 128) holds the product twice over. B
// takes 16 KiB of shared memory here.
extern "C" __global__ void warpgroup_product_128_columns(const float* a, const float* b_k_major,
                                                         float* d) {
    WHORL_DYNAMIC_SHARED(float, shared);
    float* tile = swizzle_aligned(shared);
    const int thread = threadIdx.x, lane = thread % 32;
    for (int chunk = thread; chunk < 128 * 8; chunk += blockDim.x) {
        const int n = chunk / 8, c = chunk % 8;
        cp_async_16(tile + n * 32 + 4 * (c ^ (n % 8)), b_k_major + n % 64 * 32 + 4 * c, false);
    }
    cp_async_commit();
    cp_async_wait<0>();
    fence_async_proxy_shared();
    __syncthreads();
    const int row0 = first_row_of_warp(thread / 32);
    unsigned a_fragments[4][4];
    load_a_fragments(a_fragments, a, row0, lane, true);
    float acc[64] = {};
    wgmma_fence();
    for (int ks = 0; ks < 4; ++ks)
        wgmma_tf32_m64n128k8(acc, a_fragments[ks], wgmma_descriptor_128b(tile + 8 * ks));
    wgmma_commit();
    wgmma_wait<0>();
    store_d<128>(d, acc, row0, lane);
}

// The same product by mma.sync m16n8k8, B's fragments read from global memory: each warp's
// rows, eight 8-column blocks, each output's products in the k order of the wgmma kernel.
extern "C" __global__ void warpgroup_product_by_mma_sync(const float* a, const float* b_k_major,
                                                         float* d) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int row0 = first_row_of_warp(threadIdx.x / 32);
    unsigned a_fragments[4][4];
    load_a_fragments(a_fragments, a, row0, lane, true);
    float acc[32] = {};
    for (int ks = 0; ks < 4; ++ks)
        for (int j = 0; j < 8; ++j) {
            // b[0] = B[8ks + t][8j + g], b[1] = B[8ks + t + 4][8j + g].
            const float* column = b_k_major + (8 * j + g) * 32 + 8 * ks + t;
            const unsigned b_fragment[2] = {__float_as_uint(column[0]), __float_as_uint(column[4])};
            mma_tf32_m16n8k8(acc + 4 * j, a_fragments[ks], b_fragment, acc + 4 * j);
        }
    store_d<64>(d, acc, row0, lane);
}

// out[2k], out[2k + 1]: the low and high 32 bits (as a float's bits) of the descriptor of values
// 8k .. + 8 of the rows of a tile 3 KiB into dynamic shared memory, k = 0..3. One thread; the
// launch gives at least 3 KiB + 128 bytes.
extern "C" __global__ void wgmma_descriptor_fields(float* out) {
    WHORL_DYNAMIC_SHARED(float, shared);
    for (int k = 0; k < 4; ++k) {
        const unsigned long long descriptor = wgmma_descriptor_128b(shared + 768 + 8 * k);
        out[2 * k] = __uint_as_float(static_cast<unsigned>(descriptor));
        out[2 * k + 1] = __uint_as_float(static_cast<unsigned>(descriptor >> 32));
    }
}

// The emulator's shared addresses are those of dynamic shared memory: a static __shared__ array
// has none, which it reports.
extern "C" __global__ void broken_shared_address_of_static_shared(float* out) {
    __shared__ __align__(16) float staged[4];
    out[threadIdx.x] = static_cast<float>(shared_address(staged));
}

extern "C" __global__ void broken_warpgroup_read_before_wait(const float* a, const float* b_k_major,
                                                             float* d) {
    warpgroup_product_tile<WgmmaMistake::ReadBeforeWait>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_short_wait(const float* a, const float* b_k_major,
                                                       float* d) {
    warpgroup_product_tile<WgmmaMistake::ShortWait>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_no_swizzle_descriptor(const float* a,
                                                                  const float* b_k_major,
                                                                  float* d) {
    warpgroup_product_tile<WgmmaMistake::NoSwizzleDescriptor>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_stride_of_128(const float* a, const float* b_k_major,
                                                          float* d) {
    warpgroup_product_tile<WgmmaMistake::StrideOf128>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_unrounded(const float* a, const float* b_k_major,
                                                      float* d) {
    warpgroup_product_tile<WgmmaMistake::Unrounded>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_no_proxy_fence(const float* a, const float* b_k_major,
                                                           float* d) {
    warpgroup_product_tile<WgmmaMistake::NoProxyFence>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_no_wgmma_fence(const float* a, const float* b_k_major,
                                                           float* d) {
    warpgroup_product_tile<WgmmaMistake::NoWgmmaFence>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_overwritten_b(const float* a, const float* b_k_major,
                                                          float* d) {
    warpgroup_product_tile<WgmmaMistake::OverwrittenB>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_unfenced_refill(const float* a, const float* b_k_major,
                                                            float* d) {
    warpgroup_product_tile<WgmmaMistake::UnfencedRefill>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_no_commit(const float* a, const float* b_k_major,
                                                      float* d) {
    warpgroup_product_tile<WgmmaMistake::NoCommit>(a, b_k_major, d);
}

extern "C" __global__ void broken_warpgroup_no_wait(const float* a, const float* b_k_major,
                                                    float* d) {
    warpgroup_product_tile<WgmmaMistake::NoWait>(a, b_k_major, d);
}
