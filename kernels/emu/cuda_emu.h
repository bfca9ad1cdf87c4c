// CUDA on the CPU: with this header, g++ compiles whorl's .cu kernels as ordinary C++.
//
// Every CUDA thread of a block runs as a cooperative fiber on one OS thread, so
// __syncthreads() is a real barrier and warp shuffles are real exchanges among 32 fibers.
// Blocks run one after another per OS thread (several OS threads share a grid), so a block's
// shared memory is ordinary memory. The runtime (runtime.cpp) reports what a GPU would get
// silently wrong: barrier divergence, threads exiting while others wait, deadlocked warps.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <string>
#include <type_traits>
#include <utility>

#include "async_copy.h"
#include "mma.h"
#include "wgmma.h"

#define WHORL_EMULATOR 1

#define __global__
#define __device__ static inline
#define __host__
#define __forceinline__ __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static
#define __align__(bytes) __attribute__((aligned(bytes)))

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

namespace whorl_emu {

extern thread_local uint3 thread_index;
extern thread_local uint3 block_index;
extern thread_local dim3 block_dim;
extern thread_local dim3 grid_dim;

// The block's dynamic shared memory, poisoned with NaN at every block start, and its size.
void* dynamic_shared();
size_t dynamic_shared_bytes();

// A block-wide barrier; `site` identifies the __syncthreads() call for divergence checks.
void syncthreads(const char* file, int line);

enum class WarpOp { Shuffle, ShuffleDown, ShuffleXor, Ballot, Sync, Collective };

// A warp-collective operation on a 32-bit payload; returns this lane's result.
uint32_t warp_exchange(WarpOp op, unsigned mask, uint32_t payload, int argument, int width,
                       const char* file, int line);

// A warp-wide operation on every lane's data at once (mma.sync, ldmatrix): once all 32 lanes
// of the warp have arrived, `complete` runs with each lane's `lane_data`, in lane order.
using WarpCollective = void (*)(void* const lanes[32]);
void warp_collective(void* lane_data, WarpCollective complete, const char* file, int line);

// A mistake found by the emulated instruction itself: the launch fails with this message.
void report(const std::string& message);

template <typename T>
T warp_value(WarpOp op, unsigned mask, T value, int argument, int width, const char* file,
             int line) {
    static_assert(sizeof(T) == 4, "warp shuffles of 32-bit values only");
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    bits = warp_exchange(op, mask, bits, argument, width, file, line);
    T out;
    std::memcpy(&out, &bits, 4);
    return out;
}

// The current thread's rank in its block, x fastest: warp w is ranks 32w..32w+31.
inline unsigned thread_rank() {
    return thread_index.x + block_dim.x * (thread_index.y + block_dim.y * thread_index.z);
}

}  // namespace whorl_emu

#define threadIdx (::whorl_emu::thread_index)
#define blockIdx (::whorl_emu::block_index)
#define blockDim (::whorl_emu::block_dim)
#define gridDim (::whorl_emu::grid_dim)

#define __syncthreads() ::whorl_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) \
    ((void)::whorl_emu::warp_exchange(::whorl_emu::WarpOp::Sync, 0xffffffffu, 0, 0, 32, __FILE__, __LINE__))
#define __shfl_sync(mask, value, lane, ...)                                                     \
    ::whorl_emu::warp_value(::whorl_emu::WarpOp::Shuffle, (mask), (value), (lane),            \
                            WHORL_EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, value, delta, ...)                                              \
    ::whorl_emu::warp_value(::whorl_emu::WarpOp::ShuffleDown, (mask), (value), (delta),       \
                            WHORL_EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask, ...)                                           \
    ::whorl_emu::warp_value(::whorl_emu::WarpOp::ShuffleXor, (mask), (value), (lane_mask),    \
                            WHORL_EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __ballot_sync(mask, predicate)                                                         \
    ((unsigned)::whorl_emu::warp_exchange(::whorl_emu::WarpOp::Ballot, (mask),                \
                                          (predicate) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
// The optional width argument of the shuffles, 32 when left out.
#define WHORL_EMU_WIDTH(...) (0 __VA_OPT__(+) __VA_ARGS__ ?: 32)

// Dynamic shared memory: `extern __shared__ T name[];` in CUDA.
#define WHORL_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::whorl_emu::dynamic_shared())

// Atomics: blocks run on several OS threads at once, so these are real atomics.
template <typename T>
__device__ T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}
__device__ int atomicMax(int* address, int value) {
    std::atomic_ref<int> target(*address);
    int old = target.load(std::memory_order_relaxed);
    while (old < value && !target.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
    }
    return old;
}
__device__ int atomicCAS(int* address, int compare, int value) {
    std::atomic_ref<int>(*address).compare_exchange_strong(compare, value,
                                                            std::memory_order_relaxed);
    return compare;
}

// CUDA's integer min and max.
__device__ int min(int a, int b) { return a < b ? a : b; }
__device__ int max(int a, int b) { return a > b ? a : b; }

// Math intrinsics, as their precise versions (glibc declares __expf and __logf but does not
// export them, so they are macros here).
#define __expf(x) expf(x)
#define __logf(x) logf(x)
__device__ float __fdividef(float a, float b) { return a / b; }
__device__ float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
__device__ float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
__device__ float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
__device__ unsigned __float_as_uint(float x) {
    unsigned bits;
    std::memcpy(&bits, &x, 4);
    return bits;
}
__device__ float __uint_as_float(unsigned bits) {
    float x;
    std::memcpy(&x, &bits, 4);
    return x;
}

struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
__device__ float2 make_float2(float x, float y) { return {x, y}; }
__device__ float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// Half and bfloat16 storage types, converting with round-to-nearest-even as the GPU does.
struct __half {
    uint16_t bits;
};
struct __nv_bfloat16 {
    uint16_t bits;
};
__device__ float __half2float(__half h) {
    uint32_t sign = (h.bits & 0x8000u) << 16, exponent = (h.bits >> 10) & 0x1f,
             mantissa = h.bits & 0x3ffu, bits;
    if (exponent == 0) {
        float value = std::ldexp(static_cast<float>(mantissa), -24);
        return sign ? -value : value;
    }
    if (exponent == 31) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    }
    return __uint_as_float(bits);
}
__device__ __half __float2half(float f) {
    uint32_t bits = __float_as_uint(f);
    uint16_t sign = (bits >> 16) & 0x8000u;
    float magnitude = std::fabs(f);
    if (std::isnan(f)) return {static_cast<uint16_t>(sign | 0x7e00u)};
    if (magnitude >= 65520.0f) return {static_cast<uint16_t>(sign | 0x7c00u)};
    if (magnitude < 6.103515625e-05f) {  // subnormal: multiples of 2^-24, nearest even
        float scaled = std::nearbyint(magnitude * 16777216.0f);
        return {static_cast<uint16_t>(sign | static_cast<uint16_t>(scaled))};
    }
    uint32_t exponent = ((bits >> 23) & 0xff) - 112, mantissa = bits & 0x7fffffu;
    uint32_t half = (exponent << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half += 1;
    return {static_cast<uint16_t>(sign | half)};
}
__device__ float __bfloat162float(__nv_bfloat16 b) {
    return __uint_as_float(static_cast<uint32_t>(b.bits) << 16);
}
__device__ __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t bits = __float_as_uint(f);
    if (std::isnan(f)) return {static_cast<uint16_t>((bits >> 16) | 0x40u)};
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return {static_cast<uint16_t>(bits >> 16)};
}

// Tensor cores (nvcuda::wmma) for 16x16x8 TF32 and 16x16x16 half/bfloat16 tiles. Each lane's
// fragment holds the whole tile (a GPU spreads it over the warp); mma_sync rounds TF32 inputs
// to 10 mantissa bits and accumulates in float32. store_matrix_sync is warp-synchronous.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    float x[rows * cols];
};

// TF32 keeps 10 mantissa bits, rounded to nearest with ties away from zero, as
// __float_to_tf32 (cvt.rna.tf32.f32) rounds.
__device__ float round_tf32(float value) { return __uint_as_float(::whorl_emu::round_to_tf32(value)); }
__device__ float __float_to_tf32(float value) { return round_tf32(value); }
__device__ float element(float v) { return v; }
__device__ float element(__half v) { return __half2float(v); }
__device__ float element(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename F, typename T>
void fill_fragment(F& fragment, T value) {
    for (float& v : fragment.x) v = element(value);
}
template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* pointer, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, Layout>;
    constexpr bool column = std::is_same<Layout, col_major>::value;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.x[r * F::cols + c] = element(column ? pointer[c * ldm + r] : pointer[r * ldm + c]);
}
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* pointer, unsigned ldm,
                      layout_t layout) {
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            f.x[r * N + c] = layout == mem_col_major ? pointer[c * ldm + r] : pointer[r * ldm + c];
}
template <int M, int N, int K>
void store_matrix_sync(float* pointer, const fragment<accumulator, M, N, K, float>& f,
                       unsigned ldm, layout_t layout) {
    ::whorl_emu::warp_exchange(::whorl_emu::WarpOp::Sync, 0xffffffffu, 0, 0, 32, __FILE__, __LINE__);
    if (threadIdx.x % 32 == 0)
        for (int r = 0; r < M; ++r)
            for (int c = 0; c < N; ++c)
                (layout == mem_col_major ? pointer[c * ldm + r] : pointer[r * ldm + c]) = f.x[r * N + c];
    ::whorl_emu::warp_exchange(::whorl_emu::WarpOp::Sync, 0xffffffffu, 0, 0, 32, __FILE__, __LINE__);
}
template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
    constexpr bool tf32 = std::is_same<T, precision::tf32>::value;
    float out[M * N];
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float sum = c.x[i * N + j];
            for (int k = 0; k < K; ++k) {
                float x = a.x[i * K + k], y = b.x[k * N + j];
                sum += tf32 ? round_tf32(x) * round_tf32(y) : x * y;
            }
            out[i * N + j] = sum;
        }
    std::memcpy(d.x, out, sizeof out);
}
}  // namespace wmma
}  // namespace nvcuda

// Ampere's warp-level tensor-core and asynchronous-copy instructions, as kernels/whorl.cuh wraps
// them for NVRTC (see there for what each does). mma.h and async_copy.h say what is checked.
// The same bits as whorl.cuh's integer rounding (cvt.rna's for every non-NaN value).
__device__ unsigned tf32_round(float value) { return (__float_as_uint(value) + 0x1000u) & ~0x1fffu; }

__device__ void mma_tf32_m16n8k8(float d[4], const unsigned a[4], const unsigned b[2],
                                 const float c[4],
                                 std::source_location site = std::source_location::current()) {
    ::whorl_emu::MmaLane lane{a, b, c, d};
    ::whorl_emu::warp_collective(&lane, &::whorl_emu::complete_mma_tf32_m16n8k8, site.file_name(),
                                 static_cast<int>(site.line()));
}

// cvt.rn.bf16x2.f32: round to nearest even, as __float2bfloat16 does.
__device__ unsigned bf16_pair(float low, float high) {
    return static_cast<unsigned>(__float2bfloat16(high).bits) << 16 | __float2bfloat16(low).bits;
}

__device__ void mma_bf16_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2],
                                  const float c[4],
                                  std::source_location site = std::source_location::current()) {
    ::whorl_emu::MmaLane lane{a, b, c, d};
    ::whorl_emu::warp_collective(&lane, &::whorl_emu::complete_mma_bf16_m16n8k16,
                                 site.file_name(), static_cast<int>(site.line()));
}

__device__ void ldmatrix_x4(unsigned registers[4], const void* shared_row,
                            std::source_location site = std::source_location::current()) {
    if (reinterpret_cast<uintptr_t>(shared_row) % 16 != 0)
        ::whorl_emu::report("ldmatrix at " + std::string(site.file_name()) + ":" +
                            std::to_string(site.line()) + " from a row that is not 16-byte aligned");
    ::whorl_emu::LdmatrixLane lane{static_cast<const unsigned char*>(shared_row), registers};
    ::whorl_emu::warp_collective(&lane, &::whorl_emu::complete_ldmatrix_x4, site.file_name(),
                                 static_cast<int>(site.line()));
}

// A cp.async of `bytes` (4 or 16), both addresses aligned to it.
__device__ void cp_async_bytes(void* shared_dst, const void* global_src, bool zero_fill,
                               size_t bytes, std::source_location site) {
    if (reinterpret_cast<uintptr_t>(shared_dst) % bytes != 0 ||
        reinterpret_cast<uintptr_t>(global_src) % bytes != 0) {
        ::whorl_emu::report("cp.async of " + std::to_string(bytes) + " bytes at " +
                            std::string(site.file_name()) + ":" + std::to_string(site.line()) +
                            " from or to an address that is not " + std::to_string(bytes) +
                            "-byte aligned");
        return;
    }
    ::whorl_emu::async_copies().issue(shared_dst, global_src, bytes, zero_fill);
}

__device__ void cp_async_16(void* shared_dst, const void* global_src, bool zero_fill,
                            std::source_location site = std::source_location::current()) {
    cp_async_bytes(shared_dst, global_src, zero_fill, 16, site);
}

// Caching in L1 or not is a speed matter only: the same copy as cp_async_16.
__device__ void cp_async_16_cached(void* shared_dst, const void* global_src, bool zero_fill,
                                   std::source_location site = std::source_location::current()) {
    cp_async_bytes(shared_dst, global_src, zero_fill, 16, site);
}

__device__ void cp_async_4(void* shared_dst, const void* global_src, bool zero_fill,
                           std::source_location site = std::source_location::current()) {
    cp_async_bytes(shared_dst, global_src, zero_fill, 4, site);
}

__device__ void cp_async_commit() { ::whorl_emu::async_copies().commit(); }

template <int PendingGroups>
__device__ void cp_async_wait() {
    static_assert(PendingGroups >= 0, "cp.async.wait_group takes a count of groups");
    ::whorl_emu::async_copies().wait(PendingGroups, ::whorl_emu::async_proxy(),
                                     ::whorl_emu::thread_rank());
}

// Hopper's warpgroup tensor cores, as kernels/whorl.cuh wraps them for NVRTC (see there for what
// each does). wgmma.h says how they are modelled and what is checked.
#define WHORL_WARPGROUP_MMA 1

// A shared-memory address is the byte offset from the block's dynamic shared memory here: the
// emulator's other shared memory (static __shared__ arrays) has none.
__device__ unsigned shared_address(const void* p,
                                   std::source_location site = std::source_location::current()) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(::whorl_emu::dynamic_shared());
    const uintptr_t at = reinterpret_cast<uintptr_t>(p);
    if (at < base || at >= base + ::whorl_emu::dynamic_shared_bytes()) {
        ::whorl_emu::report("shared_address at " +
                            ::whorl_emu::call_site(site.file_name(), site.line()) +
                            " of a pointer outside the block's dynamic shared memory (the "
                            "emulator gives shared addresses of dynamic shared memory only)");
        return 0;
    }
    return static_cast<unsigned>(at - base);
}

__device__ unsigned long long wgmma_descriptor_128b(
    const float* tile, std::source_location site = std::source_location::current()) {
    return static_cast<unsigned long long>((shared_address(tile, site) & 0x3ffffu) >> 4) |
           (1ull << 16) | (static_cast<unsigned long long>(1024 >> 4) << 32) | (1ull << 62);
}

namespace whorl_emu {

// wgmma.fence, wgmma.commit_group and wgmma.wait_group: warp collectives on the warp's queue.
inline void wgmma_sync(WarpCollective complete, int pending_groups, std::source_location site) {
    WgmmaSyncLane lane{&wgmma_queue(), pending_groups, site.file_name(),
                       static_cast<int>(site.line())};
    warp_collective(&lane, complete, site.file_name(), static_cast<int>(site.line()));
}

// The warp's share of the warpgroup's wgmma of `columns` columns, which must be four whole warps
// of the block.
inline void wgmma_tf32(int columns, float* d, const unsigned a[4], unsigned long long b,
                       std::source_location site) {
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned warpgroup = thread_rank() / 128;
    if (128 * (warpgroup + 1) > threads)
        report("wgmma at " + call_site(site.file_name(), site.line()) + " in a block of " +
               std::to_string(threads) + " threads: warpgroup " + std::to_string(warpgroup) +
               " is not four whole warps (128 threads)");
    WgmmaIssueLane lane{&wgmma_queue(), columns, a, d, b, site.file_name(),
                        static_cast<int>(site.line())};
    warp_collective(&lane, &complete_wgmma_issue, site.file_name(),
                    static_cast<int>(site.line()));
}

}  // namespace whorl_emu

__device__ void wgmma_fence(std::source_location site = std::source_location::current()) {
    ::whorl_emu::wgmma_sync(&::whorl_emu::complete_wgmma_fence, 0, site);
}

__device__ void wgmma_tf32_m64n64k8(float d[32], const unsigned a[4], unsigned long long b,
                                    std::source_location site = std::source_location::current()) {
    ::whorl_emu::wgmma_tf32(64, d, a, b, site);
}

__device__ void wgmma_tf32_m64n128k8(float d[64], const unsigned a[4], unsigned long long b,
                                     std::source_location site = std::source_location::current()) {
    ::whorl_emu::wgmma_tf32(128, d, a, b, site);
}

__device__ void wgmma_commit(std::source_location site = std::source_location::current()) {
    ::whorl_emu::wgmma_sync(&::whorl_emu::complete_wgmma_commit, 0, site);
}

template <int PendingGroups>
__device__ void wgmma_wait(std::source_location site = std::source_location::current()) {
    static_assert(PendingGroups >= 0, "wgmma.wait_group takes a count of groups");
    ::whorl_emu::wgmma_sync(&::whorl_emu::complete_wgmma_wait, PendingGroups, site);
}

// A 16-byte store of B for a wgmma: tracked as unfenced until this thread's next proxy fence.
__device__ void store_wgmma_operand(float* at, float4 value) {
    std::memcpy(at, &value, sizeof value);
    ::whorl_emu::async_proxy().written(::whorl_emu::thread_rank(),
                                       reinterpret_cast<const unsigned char*>(at), sizeof value);
}

// fence.proxy.async.shared::cta: this thread's landed cp.async copies and operand stores become
// visible to wgmma.
__device__ void fence_async_proxy_shared() {
    ::whorl_emu::async_proxy().fence(::whorl_emu::thread_rank());
}
