// Deliberately broken kernels: the emulator must report each of these mistakes.
#include "whorl.cuh"

// Shifts by one, writing out[i + 1] for every i < len: the last thread writes one element past
// the end of `out` (len elements), an out-of-bounds write.
extern "C" __global__ void broken_out_of_bounds_write(int len, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) out[i + 1] = 1.0f;
}

// Reverses a block's values through shared memory without a barrier between the write and the
// read: reads see the poison (NaN) that no thread has overwritten yet.
extern "C" __global__ void broken_missing_barrier(const float* in, float* out) {
    WHORL_DYNAMIC_SHARED(float, staged);
    int t = threadIdx.x;
    staged[t] = in[t];
    out[t] = staged[blockDim.x - 1 - t];
}

// Stages each thread's value in dynamic shared memory, then reverses the block's values: a
// launch with less than a float per thread of shared memory has its last threads write past
// it, which the emulator reports.
extern "C" __global__ void broken_shared_overrun(const float* in, float* out) {
    WHORL_DYNAMIC_SHARED(float, staged);
    int t = threadIdx.x;
    staged[t] = in[t];
    __syncthreads();
    out[t] = staged[blockDim.x - 1 - t];
}

// Even and odd threads wait at different barriers: barrier divergence.
extern "C" __global__ void broken_divergent_barrier(float* out) {
    if (threadIdx.x % 2 == 0) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

// Thread 0 leaves early while the others wait at a barrier.
extern "C" __global__ void broken_early_exit(float* out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Copies 16 bytes with cp.async into shared memory 4 bytes past a 16-byte boundary: cp.async
// needs both addresses 16-byte aligned.
extern "C" __global__ void broken_misaligned_cp_async(const float* in, float* out) {
    __shared__ __align__(16) float staged[8];
    cp_async_16(staged + 1, in, false);
    cp_async_commit();
    cp_async_wait<0>();
    out[threadIdx.x] = staged[1];
}

// Copies 4 bytes with cp.async from 2 bytes past a float: a 4-byte copy needs 4-byte alignment.
extern "C" __global__ void broken_misaligned_cp_async_4(const float* in, float* out) {
    __shared__ __align__(16) float staged[2];
    cp_async_4(staged, reinterpret_cast<const char*>(in) + 2, false);
    cp_async_commit();
    cp_async_wait<0>();
    out[threadIdx.x] = staged[0];
}
