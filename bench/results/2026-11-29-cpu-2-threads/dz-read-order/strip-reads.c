// How fast one thread reads conv5's dz at batch 32 (32 x 112 x 112 x 64 floats, 103 MB) from
// memory, three ways:
//
//   stream   one pass from start to end (a single stream);
//   strips   as the pass down a strip does: windows of 10 rows, 8 rows apart, their 10 rows read
//            side by side a vector at a time, each prefetched 512 floats ahead, and the 9 sums
//            of neighbouring rows stored into a strip;
//   ahead    strips, and as each window is read, the 8 rows the next window adds asked for in
//            memory order, 10 cache lines a vector.
//
// Build and run: cc -O2 -mavx512f strip-reads.c -o strip-reads && ./strip-reads strips
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLOATS (32L * 112 * 112 * 64)
#define ROW (112 * 64)
#define WINDOW 10
#define STEP 8

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
    const char* how = argc > 1 ? argv[1] : "strips";
    int stream = !strcmp(how, "stream"), ahead = !strcmp(how, "ahead");
    float* dz = aligned_alloc(64, FLOATS * 4);
    float* strip = aligned_alloc(64, (WINDOW - 1) * ROW * 4);
    float* other = aligned_alloc(64, 64L << 20);
    for (long i = 0; i < FLOATS; i++) dz[i] = i % 7;
    memset(strip, 0, (WINDOW - 1) * ROW * 4);
    memset(other, 0, 64L << 20);
    long rows = FLOATS / ROW;
    double best = 1e9;
    __m512 sum = _mm512_setzero_ps();
    for (int repeat = 0; repeat < 7; repeat++) {
        for (long i = 0; i < (16L << 20); i += 16) other[i] += 1;  // dz out of the caches
        double start = now();
        if (stream) {
            for (long i = 0; i < FLOATS; i += 16) sum = _mm512_add_ps(sum, _mm512_load_ps(dz + i));
        } else {
            for (long top = 0; top + WINDOW <= rows; top += STEP) {
                float* window = dz + top * ROW;
                float* next = window + WINDOW * ROW;
                long next_len = top + STEP + WINDOW <= rows ? STEP * ROW : 0, asked = 0;
                for (long c = 0; c < ROW; c += 16) {
                    for (int line = 0; ahead && line < 10 && asked < next_len; line++, asked += 16)
                        _mm_prefetch((const char*)(next + asked), _MM_HINT_T0);
                    __m512 v[WINDOW];
                    for (int r = 0; r < WINDOW; r++) {
                        float* at = window + r * ROW + c;
                        _mm_prefetch((const char*)(at + 512), _MM_HINT_T0);
                        v[r] = _mm512_load_ps(at);
                    }
                    for (int r = 0; r + 1 < WINDOW; r++)
                        _mm512_store_ps(strip + r * ROW + c, _mm512_add_ps(v[r], v[r + 1]));
                }
            }
        }
        double seconds = now() - start;
        if (seconds < best) best = seconds;
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, sum);
    printf("%s: %.2f ms, %.1f GB/s of dz (%g)\n", how, best * 1e3, FLOATS * 4 / best / 1e9,
           lanes[0] + strip[5]);
    return 0;
}
