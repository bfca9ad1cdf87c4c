// kernels/whorl.cuh's tensor-core and cp.async primitives one at a time, for the emulator's
// tests. One warp (32 threads) per launch.
#include "whorl.cuh"

// d = a b + c by one m16n8k8 TF32 mma, with the fragments as given: lane l's registers are
// a[4l..4l+4), b[2l..2l+2), c[4l..4l+4) and it writes d[4l..4l+4). The a and b values are
// rounded with tf32_round when `round` is non-zero, else passed as their float32 bits.
extern "C" __global__ void mma_tf32_fragments(int round, const float* a, const float* b,
                                              const float* c, float* d) {
    const int lane = threadIdx.x;
    unsigned a_frag[4], b_frag[2];
    float c_frag[4], d_frag[4];
    for (int i = 0; i < 4; ++i) {
        a_frag[i] = round ? tf32_round(a[4 * lane + i]) : __float_as_uint(a[4 * lane + i]);
        c_frag[i] = c[4 * lane + i];
    }
    for (int i = 0; i < 2; ++i)
        b_frag[i] = round ? tf32_round(b[2 * lane + i]) : __float_as_uint(b[2 * lane + i]);
    mma_tf32_m16n8k8(d_frag, a_frag, b_frag, c_frag);
    for (int i = 0; i < 4; ++i) d[4 * lane + i] = d_frag[i];
}

// What a thread sees of its own cp.async copies as wait_group retires them. Thread t copies
// in[16t + 4i .. +4) to its shared chunk i (i = 0..3): chunk 0 in group 0, chunk 1 zero-filled
// in group 1, chunk 2 in group 2, chunk 3 issued but not committed. After cp_async_wait<2>, <1>,
// <0>, and a final commit + cp_async_wait<0>, it writes its 4 chunks (16 floats) to
// out[512 * snapshot + 16t ..).
extern "C" __global__ void cp_async_groups(const float* in, float* out) {
    __shared__ __align__(16) float chunks[32][16];
    const int t = threadIdx.x;
    for (int i = 0; i < 4; ++i) {
        cp_async_16(&chunks[t][4 * i], in + 16 * t + 4 * i, i == 1);
        if (i < 3) cp_async_commit();
    }
    auto snapshot = [&](int index) {
        for (int i = 0; i < 16; ++i) out[512 * index + 16 * t + i] = chunks[t][i];
    };
    cp_async_wait<2>();
    snapshot(0);
    cp_async_wait<1>();
    snapshot(1);
    cp_async_wait<0>();
    snapshot(2);
    cp_async_commit();
    cp_async_wait<0>();
    snapshot(3);
}

// ldmatrix .x4 from shared memory: thread t stores in[4t..4t+4) as shared row t, then lane l
// points ldmatrix at shared row (5 l) % 32 (row l % 8 of matrix l / 8) and writes its four
// registers, as floats, to out[4l..4l+4).
extern "C" __global__ void ldmatrix_x4_words(const float* in, float* out) {
    __shared__ __align__(16) float rows[32][4];
    const int lane = threadIdx.x;
    for (int i = 0; i < 4; ++i) rows[lane][i] = in[4 * lane + i];
    __syncwarp();
    unsigned words[4];
    ldmatrix_x4(words, rows[5 * lane % 32]);
    for (int i = 0; i < 4; ++i) out[4 * lane + i] = __uint_as_float(words[i]);
}

// cd = a b + cd by one m16n8k16 BF16 mma, with the fragments as given: lane l's registers hold
// the pairs (a[8l + 2i], a[8l + 2i + 1]) (i = 0..3) and (b[4l + 2i], b[4l + 2i + 1]) (i = 0..1),
// made by bf16_pair (low half first); C and D as cd[4l..4l+4), the mma_tf32_fragments' layout.
extern "C" __global__ void mma_bf16_fragments(const float* a, const float* b, float* cd) {
    const int lane = threadIdx.x;
    unsigned a_frag[4], b_frag[2];
    float acc[4];
    for (int i = 0; i < 4; ++i) {
        a_frag[i] = bf16_pair(a[8 * lane + 2 * i], a[8 * lane + 2 * i + 1]);
        acc[i] = cd[4 * lane + i];
    }
    for (int i = 0; i < 2; ++i) b_frag[i] = bf16_pair(b[4 * lane + 2 * i], b[4 * lane + 2 * i + 1]);
    mma_bf16_m16n8k16(acc, a_frag, b_frag, acc);
    for (int i = 0; i < 4; ++i) cd[4 * lane + i] = acc[i];
}

// D = A B (A 16 x 16, B 16 x 8, D 16 x 8, row-major) by one m16n8k16 BF16 mma whose fragments
// are paired from the m16n8k8 (TF32 layout) fragments of K 0-7 and 8-15 by bf16_a_fragment and
// bf16_b_fragment, as the convolution kernels make them; with MIXED_ROWS, A's pairs are
// (a[0], a[1]) and (a[2], a[3]) instead (rows g and g + 8 mixed), which must show.
template <bool MIXED_ROWS>
__device__ void bf16_mma_of_tf32_fragments_tile(const float* a, const float* b, float* d) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    unsigned a_k8[2][4], b_k8[2][2];
    for (int h = 0; h < 2; ++h) {
        const int k = 8 * h + t;
        a_k8[h][0] = __float_as_uint(a[g * 16 + k]);
        a_k8[h][1] = __float_as_uint(a[(g + 8) * 16 + k]);
        a_k8[h][2] = __float_as_uint(a[g * 16 + k + 4]);
        a_k8[h][3] = __float_as_uint(a[(g + 8) * 16 + k + 4]);
        b_k8[h][0] = __float_as_uint(b[k * 8 + g]);
        b_k8[h][1] = __float_as_uint(b[(k + 4) * 8 + g]);
    }
    unsigned a_frag[4], b_frag[2];
    bf16_a_fragment(a_frag, a_k8[0], a_k8[1]);
    bf16_b_fragment(b_frag, b_k8[0], b_k8[1]);
    if (MIXED_ROWS) {
        for (int h = 0; h < 2; ++h) {
            a_frag[2 * h] = bf16_pair(__uint_as_float(a_k8[h][0]), __uint_as_float(a_k8[h][1]));
            a_frag[2 * h + 1] =
                bf16_pair(__uint_as_float(a_k8[h][2]), __uint_as_float(a_k8[h][3]));
        }
    }
    float acc[4] = {};
    mma_bf16_m16n8k16(acc, a_frag, b_frag, acc);
    for (int r = 0; r < 4; ++r) d[(g + 8 * (r / 2)) * 8 + 2 * t + r % 2] = acc[r];
}

extern "C" __global__ void bf16_mma_of_tf32_fragments(const float* a, const float* b, float* d) {
    bf16_mma_of_tf32_fragments_tile<false>(a, b, d);
}

extern "C" __global__ void broken_bf16_mma_of_tf32_fragments_mixed_rows(const float* a,
                                                                        const float* b,
                                                                        float* d) {
    bf16_mma_of_tf32_fragments_tile<true>(a, b, d);
}
