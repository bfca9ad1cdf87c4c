// Shared by every kernel file: the few things CUDA and the CPU emulator spell differently.
#pragma once

#ifndef WHORL_EMULATOR
// Dynamic shared memory (the emulator defines this to poisoned per-block memory).
#define WHORL_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
// Unrolls the loop that follows completely (hot loops of constant trip count).
#define WHORL_UNROLL _Pragma("unroll")
#else
#define WHORL_UNROLL
#endif

// Threads per block of every kernel launched with more than one thread.
#define WHORL_THREADS 256

// Activation codes, as the Rust side passes them.
#define WHORL_NO_ACTIVATION 0
#define WHORL_RELU 1
#define WHORL_SIGMOID 2


// An epilogue's activation of z, by code.
__device__ __forceinline__ float activate(float z, int activation) {
    if (activation == WHORL_RELU) return fmaxf(z, 0.0f);
    if (activation == WHORL_SIGMOID) return 1.0f / (1.0f + __expf(-z));
    return z;
}

// d activation / dz from y = activation(z): relu y > 0 ? 1 : 0, sigmoid y (1 - y); 1 without an
// activation. Every kernel that applies an activation's derivative takes it from here.
__device__ __forceinline__ float activation_slope(float y, int activation) {
    if (activation == WHORL_RELU) return y > 0.0f ? 1.0f : 0.0f;
    if (activation == WHORL_SIGMOID) return y * (1.0f - y);
    return 1.0f;
}

// A GEMM epilogue's output for one sum z (its bias added) stored at element `at`:
// activation(z) in a forward pass; with slope_at (backward-data into the activated output y of
// the layer before), z times the activation's derivative there, activation_slope(slope_at[at]):
// the bits of activation_backward after the pass, without its pass over dx.
__device__ __forceinline__ float epilogue_output(float z, int activation,
                                                 const float* __restrict__ slope_at, size_t at) {
    return slope_at ? z * activation_slope(slope_at[at], activation) : activate(z, activation);
}

// The first maximum of two values of a 2x2 pooling window, `first` the one earlier in the
// window's row-major order: the later one replaces it only when strictly greater, as pool.cu's
// first_max. A window's maximum is ((c0, c1), (c2, c3)) taken pairwise.
__device__ __forceinline__ float first_max_of_two(float first, float second) {
    return second > first ? second : first;
}

// Adds `step` to the lowest digit of a three-digit mixed-radix number (minor < minor_radix,
// middle < middle_radix, major unbounded), carrying without divisions: the cursors below.
__device__ __forceinline__ void advance_digits(int& minor, int& middle, int& major, int step,
                                               int minor_radix, int middle_radix) {
    minor += step;
    while (minor >= minor_radix) {
        minor -= minor_radix;
        if (++middle == middle_radix) {
            middle = 0;
            ++major;
        }
    }
}

// Where an index of a batch of grid_h x grid_w grids is (a pixel, or a Winograd tile of 2x2
// pixels): the index, its image, row and column. A kernel that walks a range in steps finds
// them once with grid_cursor and moves them on with advance_cursor, without divisions.
struct GridCursor {
    int index, image, row, col;
};

__device__ __forceinline__ GridCursor grid_cursor(int index, int grid_h, int grid_w) {
    const int within = index % (grid_h * grid_w);
    return GridCursor{index, index / (grid_h * grid_w), within / grid_w, within % grid_w};
}

__device__ __forceinline__ void advance_cursor(GridCursor& at, int step, int grid_h,
                                               int grid_w) {
    at.index += step;
    advance_digits(at.col, at.row, at.image, step, grid_w, grid_h);
}

// ---- Gathering convolution windows (implicit im2col), for conv2d.cu and conv2d_tf32.cu ----
//
// A grid pixel p = (image, i, j) reads a window of a source tensor whose tap (ty, tx) is source
// pixel (stride i + origin_row + ty, stride j + origin_col + tx); row k of the gathered matrix is
// tap * src_c + channel (tap-major), tap = ty * window + tx.
//
// Every entry point of a kind takes the same parameters (its tile, named by the entry point, is
// what differs), listed once here; build/kernel_contract.rs reads these lists where a
// signature names them. The arguments that pass them on to the tile are listed beside them.
//
// A gathered GEMM (conv2d.cu, conv2d_tf32.cu): the source, the grid and its windows, the
// weights (row-major [K][n] in FP32, K-major [n][K] on tensor cores), then the epilogue's bias,
// activation code and slope_at, and where out (and pooled, for the _pooled tiles) are written.
#define WHORL_GATHERED_GEMM_PARAMS                                                               \
    const float* __restrict__ src, int grid_n, int grid_h, int grid_w, int src_h, int src_w,   \
    int src_c, int window, int stride, int origin_row, int origin_col,                          \
    const float* __restrict__ weights, int n, const float* __restrict__ bias, int activation,   \
    const float* __restrict__ slope_at, float* __restrict__ out, int out_h, int out_w,          \
    int out_stride, int out_row, int out_col, float* __restrict__ pooled
#define WHORL_GATHERED_GEMM_ARGS                                                                 \
    src, grid_n, grid_h, grid_w, src_h, src_w, src_c, window, stride, origin_row, origin_col,  \
    weights, n, bias, activation, slope_at, out, out_h, out_w, out_stride, out_row, out_col

// A kernel gradient's partials (conv2d.cu, conv2d_tf32.cu): the source, the grid and its
// windows (origin for both directions), the second operand [pixels, n], whether to add a row of
// ones, the pixels of a chunk (a block's z), and the partials [chunk, rows, n].
#define WHORL_FILTER_PARTIALS_PARAMS                                                             \
    const float* __restrict__ src, int grid_n, int grid_h, int grid_w, int src_h, int src_w,   \
    int src_c, int window, int stride, int origin, const float* __restrict__ second, int n,     \
    int ones_row, int pixels_per_chunk, float* __restrict__ partial
#define WHORL_FILTER_PARTIALS_ARGS                                                               \
    src, grid_n, grid_h, grid_w, src_h, src_w, src_c, window, stride, origin, second, n,       \
    ones_row, pixels_per_chunk, partial

// A gathering thread's view of one pixel of the grid: the offset of its image in the source,
// the source row and column of its window's first tap, and whether the pixel exists.
struct WindowOrigin {
    int image_offset, row, col;
    bool valid;
};

// Where grid pixel p is: its image, row and column. Row-major, or with `pooling` (a GEMM whose
// epilogue also max-pools its output) in window-major order: the four pixels of each 2x2
// window in a row (row-major within it), the windows row-major, so pixel p is in pooled pixel
// p / 4 (grid_h and grid_w even).
struct GridPixel {
    int image, row, col;
};

__device__ __forceinline__ GridPixel grid_pixel(int p, int grid_h, int grid_w, bool pooling) {
    const int image = p / (grid_h * grid_w), within = p % (grid_h * grid_w);
    if (!pooling) return GridPixel{image, within / grid_w, within % grid_w};
    const int window = within / 4, corner = within % 4, windows_w = grid_w / 2;
    return GridPixel{image, 2 * (window / windows_w) + corner / 2,
                     2 * (window % windows_w) + corner % 2};
}

__device__ __forceinline__ WindowOrigin window_origin(int pixel, int pixels, int grid_h,
                                                      int grid_w, int src_h, int src_w, int src_c,
                                                      int stride, int origin_row,
                                                      int origin_col, bool pooling = false) {
    WindowOrigin o;
    o.valid = pixel < pixels;
    const GridPixel at = grid_pixel(pixel, grid_h, grid_w, pooling);
    o.image_offset = at.image * src_h * src_w * src_c;
    o.row = stride * at.row + origin_row;
    o.col = stride * at.col + origin_col;
    return o;
}

// One gathered pixel row as a gathering thread keeps it: the offset in src of its window's first
// tap (outside the image where the window starts in the padding) and a bit per tap
// (ty * window + tx) that lies inside the image. Found once per block, so that the main loop
// finds a copy's source with one addition and one bit test.
struct GatherRow {
    int offset;
    unsigned taps_inside;
};

__device__ __forceinline__ GatherRow gather_row(int pixel, int pixels, int grid_h, int grid_w,
                                                int src_h, int src_w, int src_c, int window,
                                                int stride, int origin_row, int origin_col,
                                                bool pooling) {
    const WindowOrigin o = window_origin(pixel, pixels, grid_h, grid_w, src_h, src_w, src_c,
                                         stride, origin_row, origin_col, pooling);
    GatherRow r{o.image_offset + (o.row * src_w + o.col) * src_c, 0u};
    for (int ty = 0; ty < window; ++ty)
        for (int tx = 0; tx < window; ++tx) {
            const int row = o.row + ty, col = o.col + tx;
            if (o.valid && row >= 0 && col >= 0 && row < src_h && col < src_w)
                r.taps_inside |= 1u << (ty * window + tx);
        }
    return r;
}

// Where one element of the window is in src: tap (ty, tx), channel; nullptr in the padding.
__device__ __forceinline__ const float* window_source(const float* __restrict__ src,
                                                      WindowOrigin o, int ty, int tx, int channel,
                                                      int src_h, int src_w, int src_c) {
    int row = o.row + ty, col = o.col + tx;
    bool inside = o.valid && row >= 0 && col >= 0 && row < src_h && col < src_w;
    return inside ? src + o.image_offset + (row * src_w + col) * src_c + channel : nullptr;
}

// One element of the window, 0 in the zero padding.
__device__ __forceinline__ float window_value(const float* __restrict__ src, WindowOrigin o,
                                              int ty, int tx, int channel, int src_h, int src_w,
                                              int src_c) {
    const float* at = window_source(src, o, ty, tx, channel, src_h, src_w, src_c);
    return at ? *at : 0.0f;
}

// A thread's position along K (k = tap * src_c + channel, tap = ty * window + tx), advanced
// without divisions inside the main loop.
struct TapCursor {
    int channel, tx, ty;
};

__device__ __forceinline__ TapCursor tap_cursor(int k, int src_c, int window) {
    int tap = k / src_c;
    return TapCursor{k % src_c, tap % window, tap / window};
}

__device__ __forceinline__ void advance(TapCursor& cursor, int step, int src_c, int window) {
    advance_digits(cursor.channel, cursor.tx, cursor.ty, step, src_c, window);
}


// ---- Tensor cores and asynchronous copies (Ampere and newer) ----
//
// Small wrappers over the PTX instructions the TF32 tensor-core kernels and the FP32 Winograd
// kernel's copies need. NVRTC compiles them to inline PTX for compute_80 and newer; the
// emulator (kernels/emu/cuda_emu.h) defines the same functions as checked C++, so a kernel
// written against them runs and is verified on the CPU.
//
// tf32_round(x): x rounded to TF32 (10 mantissa bits, nearest, ties away from zero; the low 13
//   bits are zero), as a 32-bit register ready for an mma operand: half a TF32 unit added to
//   the bits, then the low 13 bits cleared: one integer addition in SASS when the result goes
//   to an mma (ptxas drops the mask, since the tensor core ignores those bits). cvt.rna.tf32.f32
//   gives the same bits for every finite value and infinity but runs as three instructions on
//   sm_89 and sm_90 (its extra FSETP keeps a NaN's payload, which here may turn the NaN into an
//   infinity: a non-finite operand still makes a non-finite result).
// mma_tf32_m16n8k8(d, a, b, c): d = a b + c for one warp, A 16 x 8 (row), B 8 x 8 (col), C and D
//   16 x 8 in float32. Every lane of the warp calls it together with its fragments, laid out as
//   in the PTX ISA ("Matrix Fragments for mma.m16n8k8", .tf32), g = lane / 4, t = lane % 4:
//     a[0] = A[g][t]   a[1] = A[g + 8][t]   a[2] = A[g][t + 4]   a[3] = A[g + 8][t + 4]
//     b[0] = B[t][g]   b[1] = B[t + 4][g]
//     c[0] = C[g][2t]  c[1] = C[g][2t + 1]  c[2] = C[g + 8][2t]  c[3] = C[g + 8][2t + 1]  (d alike)
//   A and B must be TF32 values (from tf32_round now or when they were stored): the tensor
//   core truncates any other float.
//   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32.
// bf16_pair(low, high): low and high rounded to BF16 (8 significant bits, nearest, ties to
//   even) in one register, low in the low half: two values of an mma operand.
//   cvt.rn.bf16x2.f32 (which takes the high half's value first).
// mma_bf16_m16n8k16(d, a, b, c): d = a b + c for one warp, A 16 x 16 (row), B 16 x 8 (col) of
//   BF16, C and D 16 x 8 in float32, each a and b register two values (bf16_pair), laid out as
//   in the PTX ISA ("Matrix Fragments for mma.m16n8k16", .bf16):
//     a[0] = A[g][2t, 2t + 1]       a[1] = A[g + 8][2t, 2t + 1]
//     a[2] = A[g][2t + 8, 2t + 9]   a[3] = A[g + 8][2t + 8, 2t + 9]
//     b[0] = B[2t, 2t + 1][g]       b[1] = B[2t + 8, 2t + 9][g]
//     c and d as mma_tf32_m16n8k8's.
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32.
// ldmatrix_x4(r, shared_row): four 8 x 8 matrices of 16-bit values from shared memory, for one
//   warp: lanes 8i..8i+7 each point at one 16-byte row of matrix i (16-byte aligned), and lane l
//   gets in r[i] the 32-bit word l % 4 of row l / 4 of matrix i. Read as TF32 (rows of 4
//   values), that is an m16n8k8 A fragment when the matrices are A's rows 0-7 and 8-15 of
//   columns 0-3, then of columns 4-7 (lane l points at row l % 8 + 8 ((l / 8) % 2), column
//   4 (l / 16)), and two B fragments of a k-contiguous B. The values are as stored: round them
//   with tf32_round(__uint_as_float(r[i])) unless they were stored rounded.
//   ldmatrix.sync.aligned.m8n8.x4.shared.b16.
// cp_async_16(shared_dst, global_src, zero_fill): starts copying 16 bytes from global to shared
//   memory, both 16-byte aligned; with zero_fill the destination gets zeros and global_src is not
//   read (it must still be an aligned address, e.g. the tensor's base): the padding of a tile.
//   cp.async.cg.shared.global (cached in L2 only).
// cp_async_16_cached(shared_dst, global_src, zero_fill): the same, cached in L1 too
//   (cp.async.ca): for a convolution's windows, which overlap, so that a block's later taps
//   find much of what its earlier ones read (CUTLASS's implicit-GEMM convolutions copy their
//   activations so, and the filter through L2 only).
// cp_async_4(shared_dst, global_src, zero_fill): the same for 4 bytes, both 4-byte aligned:
//   one float of a gather. cp.async.ca.shared.global (cached in L1 too, where neighbouring
//   windows find it again).
// cp_async_commit(): the copies started since the last commit form one group.
//   cp.async.commit_group.
// cp_async_wait<N>(): waits until at most the newest N committed groups of this thread are still
//   in flight; the others' data is then visible to this thread (a __syncthreads() after it makes
//   it visible to the block). cp.async.wait_group N.
#if !defined(WHORL_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ unsigned tf32_round(float value) {
    return (__float_as_uint(value) + 0x1000u) & ~0x1fffu;
}

__device__ __forceinline__ void mma_tf32_m16n8k8(float d[4], const unsigned a[4],
                                                 const unsigned b[2], const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ unsigned bf16_pair(float low, float high) {
    unsigned pair;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(pair) : "f"(high), "f"(low));
    return pair;
}

__device__ __forceinline__ void mma_bf16_m16n8k16(float d[4], const unsigned a[4],
                                                  const unsigned b[2], const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* shared_row) {
    unsigned shared_address = static_cast<unsigned>(__cvta_generic_to_shared(shared_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address));
}

// One cp.async of BYTES bytes; CACHE is "cg" (L2 only) or "ca" (L1 too), as PTX spells it.
#define WHORL_CP_ASYNC(CACHE, BYTES, shared_dst, global_src, zero_fill)                          \
    asm volatile("cp.async." CACHE ".shared.global [%0], [%1], " #BYTES ", %2;" ::"r"(          \
                     static_cast<unsigned>(__cvta_generic_to_shared(shared_dst))),              \
                 "l"(global_src), "r"((zero_fill) ? 0 : BYTES)                                  \
                 : "memory")

__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src,
                                            bool zero_fill) {
    WHORL_CP_ASYNC("cg", 16, shared_dst, global_src, zero_fill);
}

__device__ __forceinline__ void cp_async_16_cached(void* shared_dst, const void* global_src,
                                                   bool zero_fill) {
    WHORL_CP_ASYNC("ca", 16, shared_dst, global_src, zero_fill);
}

__device__ __forceinline__ void cp_async_4(void* shared_dst, const void* global_src,
                                           bool zero_fill) {
    WHORL_CP_ASYNC("ca", 4, shared_dst, global_src, zero_fill);
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int PendingGroups>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(PendingGroups) : "memory");
}
#endif

// bf16_round(x): x rounded to BF16 (nearest, ties to even) as a float32 (the low 16 bits zero),
//   for a finite x: what bf16_pair keeps of it, for operands stored rounded.
__device__ __forceinline__ float bf16_round(float value) {
    const unsigned bits = __float_as_uint(value);
    return __uint_as_float((bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u);
}

// An m16n8k16 BF16 fragment of lane (g, t) from the m16n8k8 (TF32 layout) fragments of K 0-7
// (k0) and 8-15 (k1), as read, float32 bits. Take the BF16 fragment's K 2t, 2t + 1, 2t + 8,
// 2t + 9 to be K t, t + 4, 8 + t, 12 + t (a permutation of 0-15): then its A pairs are
// (a[0], a[2]) and (a[1], a[3]) of each m16n8k8 fragment, its B pairs (b[0], b[1]). A and B
// permuted alike leave the sum over K as it is, so kernels that read TF32 fragments multiply
// in BF16 by pairing them, one mma per 16 of K.
__device__ __forceinline__ void bf16_a_fragment(unsigned a[4], const unsigned k0[4],
                                                const unsigned k1[4]) {
    a[0] = bf16_pair(__uint_as_float(k0[0]), __uint_as_float(k0[2]));
    a[1] = bf16_pair(__uint_as_float(k0[1]), __uint_as_float(k0[3]));
    a[2] = bf16_pair(__uint_as_float(k1[0]), __uint_as_float(k1[2]));
    a[3] = bf16_pair(__uint_as_float(k1[1]), __uint_as_float(k1[3]));
}

__device__ __forceinline__ void bf16_b_fragment(unsigned b[2], const unsigned k0[2],
                                                const unsigned k1[2]) {
    b[0] = bf16_pair(__uint_as_float(k0[0]), __uint_as_float(k0[1]));
    b[1] = bf16_pair(__uint_as_float(k1[0]), __uint_as_float(k1[1]));
}

// ---- Warpgroup tensor cores (Hopper, sm_90a) ----
//
// wgmma: an asynchronous matrix multiply-add issued by a warpgroup (four consecutive warps,
// 128 threads, the first warp a multiple of 4), B read from shared memory through a matrix
// descriptor. Compiled only where NVRTC targets compute_90a (WHORL_WARPGROUP_MMA is then
// defined); the emulator defines the same functions as checked C++.
//
// shared_address(p): p's byte address in the block's shared memory (cvta.to.shared).
// wgmma_descriptor_128b(tile): the descriptor of a K-major operand of TF32 values at `tile` in
//   shared memory: rows of 32 values (128 bytes) whose 16-byte chunk c is stored at chunk
//   c ^ (row % 8) (the 128-byte swizzle; tf32_tile_offset<32> in conv2d_tf32.cu), groups of 8
//   rows 1024 bytes apart, each group 1024-byte aligned. Start address shared_address / 16 in
//   bits 0-13, leading byte offset 1 (16 bytes; unused by swizzled K-major layouts) in bits
//   16-29, stride byte offset 1024 / 16 in bits 32-45, base offset 0, layout type 1 (128-byte
//   swizzle) in bits 62-63. The swizzle applies to the address bits, so the descriptor of
//   values 8k..8k+7 of every row is that of tile + 8k.
// wgmma_fence(): orders this warpgroup's register accesses before the wgmma that follow
//   (required before the first wgmma and after the A fragments or the accumulators were
//   written by other instructions). wgmma.fence.sync.aligned.
// wgmma_tf32_m64n64k8(d, a, b): D (64 x 64) += A (64 x 8) B (8 x 64) in float32 for the
//   warpgroup, asynchronously: d and a must not be touched until a wgmma_wait retires it, nor
//   B's shared memory written. A in registers, TF32 values: warp q of the warpgroup holds rows
//   16q..16q+15 as an m16n8k8 A fragment (a[0] = A[16q + g][t], a[1] = A[16q + g + 8][t],
//   a[2] = A[16q + g][t + 4], a[3] = A[16q + g + 8][t + 4], g = lane / 4, t = lane % 4). B
//   through descriptor b: its 64 columns as K-major rows of 8 values. D: lane (g, t) of warp q
//   holds d[4j + i] = D[16q + g + 8 (i / 2)][8j + 2t + i % 2], j = 0..7 (the m16n8 C fragment
//   of each 8-column block).
//   wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 (scale-d 1: accumulate).
// wgmma_tf32_m64n128k8(d, a, b): the same for 128 columns of B and D (d[4j + i], j = 0..15):
//   one instruction where two m64n64k8 would read A twice. ...m64n128k8.f32.tf32.tf32.
// wgmma_commit(): the wgmma issued since the last commit form one group.
//   wgmma.commit_group.sync.aligned.
// wgmma_wait<N>(): waits until at most the newest N committed groups of the warpgroup are in
//   flight; the others' D is then in its registers. wgmma.wait_group.sync.aligned N.
// store_wgmma_operand(at, value): a 16-byte store to shared memory of B values that a wgmma will
//   read (a plain store; the emulator tracks it for the fence below).
// fence_async_proxy_shared(): makes this thread's writes to shared memory (operand stores,
//   landed cp.async copies) visible to the asynchronous proxy that wgmma reads B through; call
//   it after the stores or cp_async_wait and before the __syncthreads() that precedes the
//   wgmma.
//   fence.proxy.async.shared::cta.
// swizzle_aligned(shared): the first float at or after `shared` whose shared address is a
//   multiple of 1024, where the 128-byte swizzle's groups of 8 rows may start (a kernel gives
//   its dynamic shared memory 1 KiB to spare for it).
#if !defined(WHORL_EMULATOR) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WHORL_WARPGROUP_MMA 1

__device__ __forceinline__ unsigned shared_address(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ unsigned long long wgmma_descriptor_128b(const float* tile) {
    return static_cast<unsigned long long>((shared_address(tile) & 0x3ffffu) >> 4) |
           (1ull << 16) | (static_cast<unsigned long long>(1024 >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

__device__ __forceinline__ void wgmma_tf32_m64n64k8(float d[32], const unsigned a[4],
                                                    unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
          "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
          "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
          "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)
        : "memory");
}

__device__ __forceinline__ void wgmma_tf32_m64n128k8(float d[64], const unsigned a[4],
                                                     unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
          "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),
          "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]),
          "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
          "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),
          "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]),
          "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)
        : "memory");
}

__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

template <int PendingGroups>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(PendingGroups) : "memory");
}

__device__ __forceinline__ void store_wgmma_operand(float* at, float4 value) {
    *reinterpret_cast<float4*>(at) = value;
}

__device__ __forceinline__ void fence_async_proxy_shared() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
#endif

#ifdef WHORL_WARPGROUP_MMA
__device__ __forceinline__ float* swizzle_aligned(float* shared) {
    return shared + (1024u - shared_address(shared) % 1024u) % 1024u / 4;
}
#endif
