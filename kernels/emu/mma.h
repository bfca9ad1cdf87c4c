// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 on the CPU, as a warp collective: the 32
// lanes' fragments are gathered with the PTX ISA's fragment layout, multiplied, and each lane
// gets back its part of D. A kernel that fills its fragments in any other layout computes a
// different product, as it would on a GPU.
//
// Fragment layout ("Matrix Fragments for mma.m16n8k8", .tf32), with g = lane / 4 (groupID)
// and t = lane % 4 (threadID_in_group):
//   A (16 x 8, row):  a0 = A[g][t]     a1 = A[g + 8][t]     a2 = A[g][t + 4]  a3 = A[g + 8][t + 4]
//   B (8 x 8, col):   b0 = B[t][g]     b1 = B[t + 4][g]
//   C, D (16 x 8):    c0 = C[g][2t]    c1 = C[g][2t + 1]    c2 = C[g + 8][2t] c3 = C[g + 8][2t + 1]
//
// The tensor core reads the top 19 bits of each A and B register (sign, exponent, 10 mantissa
// bits): an input rounded to TF32 (tf32_round, cvt.rna) keeps its value, any other float is
// truncated toward zero. Products of two TF32 values are exact in float32; they are added to C
// in float32, in k order.
#pragma once

#include <cstdint>
#include <cstring>

namespace whorl_emu {

// cvt.rna.tf32.f32: 10 mantissa bits, rounded to nearest, ties away from zero; the low 13 bits
// of the result are zero. Infinities and NaN are kept.
inline uint32_t round_to_tf32(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & ~0x1fffu;
    return bits;
}

// The value the tensor core multiplies for a TF32 operand register: its low 13 bits dropped.
inline float tf32_operand(uint32_t bits) {
    bits &= ~0x1fffu;
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
}

// One lane's operands and result of an m16n8k8 TF32 or m16n8k16 BF16 mma.
struct MmaLane {
    const uint32_t* a;  // 4 registers
    const uint32_t* b;  // 2 registers
    const float* c;     // 4 values
    float* d;           // 4 values, may be c
};

// Completes an m16n8k8 TF32 mma for the 32 lanes of a warp (`lanes[i]` is lane i's MmaLane).
inline void complete_mma_tf32_m16n8k8(void* const lanes[32]) {
    float a[16][8], b[8][8], c[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const MmaLane& f = *static_cast<const MmaLane*>(lanes[lane]);
        int g = lane / 4, t = lane % 4;
        a[g][t] = tf32_operand(f.a[0]);
        a[g + 8][t] = tf32_operand(f.a[1]);
        a[g][t + 4] = tf32_operand(f.a[2]);
        a[g + 8][t + 4] = tf32_operand(f.a[3]);
        b[t][g] = tf32_operand(f.b[0]);
        b[t + 4][g] = tf32_operand(f.b[1]);
        c[g][2 * t] = f.c[0];
        c[g][2 * t + 1] = f.c[1];
        c[g + 8][2 * t] = f.c[2];
        c[g + 8][2 * t + 1] = f.c[3];
    }
    float d[16][8];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 8; ++j) {
            float sum = c[i][j];
            for (int k = 0; k < 8; ++k) sum += a[i][k] * b[k][j];
            d[i][j] = sum;
        }
    for (int lane = 0; lane < 32; ++lane) {
        float* out = static_cast<const MmaLane*>(lanes[lane])->d;
        int g = lane / 4, t = lane % 4;
        out[0] = d[g][2 * t];
        out[1] = d[g][2 * t + 1];
        out[2] = d[g + 8][2 * t];
        out[3] = d[g + 8][2 * t + 1];
    }
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, the same way. Each A and B register
// holds two BF16 values, the lower-indexed one in its low half ("Matrix Fragments for
// mma.m16n8k16", .bf16):
//   A (16 x 16, row): a0 = A[g][2t, 2t + 1]      a1 = A[g + 8][2t, 2t + 1]
//                     a2 = A[g][2t + 8, 2t + 9]  a3 = A[g + 8][2t + 8, 2t + 9]
//   B (16 x 8, col):  b0 = B[2t, 2t + 1][g]      b1 = B[2t + 8, 2t + 9][g]
//   C, D: as the m16n8k8's.
// Products of two BF16 values are exact in float32; they are added to C in float32, in k order.

// The float32 value of the BF16 in the low (half 0) or high (half 1) 16 bits of a register.
inline float bf16_operand(uint32_t bits, int half) {
    uint32_t value_bits = half ? bits & 0xffff0000u : bits << 16;
    float value;
    std::memcpy(&value, &value_bits, 4);
    return value;
}

// Completes an m16n8k16 BF16 mma for the 32 lanes of a warp (`lanes[i]` is lane i's
// MmaLane, its registers read as BF16 pairs).
inline void complete_mma_bf16_m16n8k16(void* const lanes[32]) {
    float a[16][16], b[16][8], c[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const MmaLane& f = *static_cast<const MmaLane*>(lanes[lane]);
        int g = lane / 4, t = lane % 4;
        for (int half = 0; half < 2; ++half) {
            a[g][2 * t + half] = bf16_operand(f.a[0], half);
            a[g + 8][2 * t + half] = bf16_operand(f.a[1], half);
            a[g][2 * t + 8 + half] = bf16_operand(f.a[2], half);
            a[g + 8][2 * t + 8 + half] = bf16_operand(f.a[3], half);
            b[2 * t + half][g] = bf16_operand(f.b[0], half);
            b[2 * t + 8 + half][g] = bf16_operand(f.b[1], half);
        }
        c[g][2 * t] = f.c[0];
        c[g][2 * t + 1] = f.c[1];
        c[g + 8][2 * t] = f.c[2];
        c[g + 8][2 * t + 1] = f.c[3];
    }
    for (int lane = 0; lane < 32; ++lane) {
        float* out = static_cast<const MmaLane*>(lanes[lane])->d;
        int g = lane / 4, t = lane % 4;
        for (int r = 0; r < 4; ++r) {
            int i = g + 8 * (r / 2), j = 2 * t + r % 2;
            float sum = c[i][j];
            for (int k = 0; k < 16; ++k) sum += a[i][k] * b[k][j];
            out[r] = sum;
        }
    }
}

// One lane's part of an ldmatrix.sync.aligned.m8n8.x4.shared.b16: the row it points at and
// the registers it receives.
struct LdmatrixLane {
    const unsigned char* row;  // 16 bytes: row (lane % 8) of matrix (lane / 8)
    uint32_t* registers;       // 4 registers: register i from matrix i
};

// Completes an ldmatrix .x4 for the 32 lanes of a warp: lane l receives, in register i, the
// 32-bit word l % 4 of row l / 4 of matrix i, whose rows lanes 8i..8i+7 point at. For 32-bit
// (TF32) values each 8 x 8 matrix of b16 is 8 rows of 4 values, so one .x4 load gives a lane
// its whole m16n8k8 A fragment (matrices: rows 0-7 and 8-15 of k 0-3, then of k 4-7).
inline void complete_ldmatrix_x4(void* const lanes[32]) {
    uint32_t rows[32][4];
    for (int lane = 0; lane < 32; ++lane)
        std::memcpy(rows[lane], static_cast<const LdmatrixLane*>(lanes[lane])->row, 16);
    for (int lane = 0; lane < 32; ++lane)
        for (int matrix = 0; matrix < 4; ++matrix)
            static_cast<const LdmatrixLane*>(lanes[lane])->registers[matrix] =
                rows[8 * matrix + lane / 4][lane % 4];
}

}  // namespace whorl_emu
