// Warp intrinsics, atomics and vector types, for the emulator's own tests. One block.
#include "whorl.cuh"

// out[t] = (xor-butterfly sum of t over the warp, the warp's ballot of odd lanes, lane 0's
// value broadcast, t + 1 from the next lane or its own past the end);
// counter[0] += 1 per thread, atomically. Block: a multiple of 32 threads.
extern "C" __global__ void warp_and_atomic_intrinsics(float4* out, int* counter) {
    int t = threadIdx.x;
    float sum = float(t);
    for (int mask = 16; mask > 0; mask /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, mask);
    unsigned odd = __ballot_sync(0xffffffffu, t % 2 == 1);
    float first = __shfl_sync(0xffffffffu, float(t), 0);
    float next = __shfl_down_sync(0xffffffffu, float(t + 1), 1);
    atomicAdd(counter, 1);
    out[t] = make_float4(sum, float(odd == 0xaaaaaaaau), first, next);
}
