// One thread's AVX-512 FP32 peak: 24 independent chains of multiply-adds (enough to hide the
// FMA's latency on both of its ports), 2 x 16 flops each.
//
// Build and run: cc -O2 -mavx512f -mfma fma-peak.c -o fma-peak && ./fma-peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 24

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    __m512 sums[CHAINS];
    const __m512 factor = _mm512_set1_ps(1.0000001f), term = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) sums[i] = _mm512_set1_ps(i);
    const long steps = 200000000 / CHAINS;
    double seconds = now();
    for (long k = 0; k < steps; k++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) sums[i] = _mm512_fmadd_ps(sums[i], factor, term);
    }
    seconds = now() - seconds;
    float total = 0;
    for (int i = 0; i < CHAINS; i++) total += _mm512_reduce_add_ps(sums[i]);
    printf("%.1f GFLOP/s (checksum %g)\n", steps * CHAINS * 32.0 / seconds / 1e9, total);
    return 0;
}
