// Hopper's warpgroup MMA on the CPU: kernels/whorl.cuh's wgmma_fence / wgmma_tf32_m64n64k8 and
// wgmma_tf32_m64n128k8 / wgmma_commit / wgmma_wait<N>, B read from shared memory through a matrix descriptor, made as
// strict as PTX allows so that a kernel which breaks the instruction's contract gets NaN, wrong
// numbers or a reported error rather than the right answer by luck.
//
// A wgmma m64nNk8 (N = 64 or 128 columns) is issued by a warpgroup (four warps), but each warp's
// share is independent: warp q of the warpgroup multiplies its own A fragment (rows 16q..16q+15,
// in its registers) by all of B into its own rows of D. So each warp keeps its own wgmma
// (WgmmaQueue), and each wgmma is, per warp, a warp collective of an m16 x nN x k8 product:
// - issuing records the 32 lanes' A registers (by value), their accumulators' addresses and the
//   descriptor in the warp's open group, and fills the accumulators with NaN: a kernel that reads
//   D before a wait retires the wgmma sees NaN;
// - wgmma.commit_group closes the open group; wgmma.wait_group N completes, in issue order,
//   every wgmma of the committed groups but the newest N: only then is B read from shared memory
//   (a kernel that overwrites it before the wait gets what it wrote) and D written. A wgmma on
//   the accumulators of a pending one continues its chain: it takes that one's result as C, and
//   D reads NaN until the chain's last wgmma is retired.
// The arithmetic is mma.h's: operands through tf32_operand (an input not rounded to TF32 is
// truncated), each element of D c + a0 b0 + ... + a7 b7 in float32, in k order, so a kernel that
// issues its k in the order of an mma.sync kernel gets the same bits.
//
// The descriptor is decoded as the hardware reads wgmma_descriptor_128b's: start address / 16 in
// bits 0-13, stride byte offset (SBO) / 16 in bits 32-45, base offset in bits 49-51 (must be 0),
// layout type in bits 62-63 (must be 1, the 128-byte swizzle, the only one whorl.cuh describes).
// Column n (0..N-1) of B is row n of a K-major tile; its value k (0..7) is at byte
//   linear ^ (((linear >> 7) & 7) << 4),  linear = start + (n / 8) SBO + (n % 8) 128 + 4k,
// of the dynamic shared memory: the 16-byte chunk XORed with the row's place in its group of 8
// rows, taken from the address bits, so the start must be in the first row of a 1024-byte
// aligned group.
//
// Reported: a wgmma without a wgmma_fence since the warp's last wgmma_wait (or the kernel's
// start); a descriptor of another layout, a start that is not in a group's first row, or B bytes
// outside the dynamic shared memory; B bytes that a cp.async landed or store_wgmma_operand
// stored in a thread which has not called fence_async_proxy_shared since (async_copy.h's AsyncProxy), checked when the wgmma is
// issued (the fence must come before it) and again when it reads them; lanes that give a wgmma
// different descriptors; accumulators that overlap a pending wgmma's without being the same; and
// (runtime.cpp) a warp that ends the kernel with wgmma not retired.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "async_copy.h"
#include "mma.h"

namespace whorl_emu {

// A mistake found by the emulated instruction itself: the launch fails with this message
// (runtime.cpp).
void report(const std::string& message);

inline std::string call_site(const char* file, int line) {
    return std::string(file) + ":" + std::to_string(line);
}

// The widest wgmma modelled: m64n128k8.
constexpr int WGMMA_MAX_COLUMNS = 128;

// The byte offsets in dynamic shared memory (`shared_bytes` of it) of B[k][n], n < `columns`, as
// `descriptor` reads them, into offsets[n][k]; "" or what is wrong with the descriptor.
inline std::string wgmma_b_offsets(uint64_t descriptor, size_t shared_bytes, int columns,
                                   uint32_t offsets[WGMMA_MAX_COLUMNS][8]) {
    const unsigned layout = descriptor >> 62, base_offset = (descriptor >> 49) & 7;
    const uint32_t start = (descriptor & 0x3fff) << 4, stride = ((descriptor >> 32) & 0x3fff) << 4;
    if (layout != 1)
        return "a descriptor of layout type " + std::to_string(layout) +
               " (bits 62-63), not 1, the 128-byte swizzle of wgmma_descriptor_128b";
    if (base_offset != 0)
        return "a descriptor of base offset " + std::to_string(base_offset) +
               " (bits 49-51), not 0";
    if ((start >> 7) & 7)
        return "a descriptor whose start address " + std::to_string(start) + " is row " +
               std::to_string((start >> 7) & 7) +
               " of its group of 8 rows: the 128-byte swizzle needs each group 1024-byte aligned";
    for (uint32_t n = 0; n < uint32_t(columns); ++n)
        for (uint32_t k = 0; k < 8; ++k) {
            const uint32_t linear = start + (n / 8) * stride + (n % 8) * 128 + 4 * k;
            const uint32_t physical = linear ^ (((linear >> 7) & 7) << 4);
            if (physical + 4 > shared_bytes)
                return "a descriptor that reads B at byte " + std::to_string(physical) +
                       " of shared memory, past the " + std::to_string(shared_bytes) +
                       " bytes of the launch's dynamic shared memory";
            offsets[n][k] = physical;
        }
    return "";
}

class WgmmaQueue;

// One lane's part of a wgmma m64nNk8: its A fragment, its N / 2 accumulators, the descriptor of
// B.
struct WgmmaIssueLane {
    WgmmaQueue* queue;  // its warp's
    int columns;        // N
    const uint32_t* a;  // 4 registers
    float* d;           // N / 2 values
    uint64_t descriptor;
    const char* file;
    int line;
};

// One lane's part of wgmma.fence, wgmma.commit_group or wgmma.wait_group.
struct WgmmaSyncLane {
    WgmmaQueue* queue;   // its warp's
    int pending_groups;  // the wait's N
    const char* file;
    int line;
};

// The wgmma one warp has issued and not retired, and whether it may issue more.
class WgmmaQueue {
  public:
    // A warp starts with no wgmma in flight and no wgmma.fence.
    void reset() {
        ops_.clear();
        committed_ = 0;
        fenced_ = false;
    }

    // wgmma.fence: the warp's register writes so far are ordered before its next wgmma.
    void fence() { fenced_ = true; }

    // wgmma.commit_group: the wgmma issued since the last commit form one group.
    void commit() { ++committed_; }

    // Records the warp's share of a wgmma (lanes[i] is lane i's WgmmaIssueLane) and fills its
    // accumulators with NaN; "" or what is wrong with it.
    std::string issue(void* const lanes[32], const AsyncProxy& proxy) {
        const auto& first = *static_cast<const WgmmaIssueLane*>(lanes[0]);
        const std::string site = "wgmma at " + call_site(first.file, first.line);
        if (!fenced_)
            return site + " without a wgmma_fence since the warp's last wgmma_wait (or the "
                          "kernel's start): the tensor cores may read its registers before the "
                          "instructions that wrote them";
        Op op;
        op.columns = first.columns;
        op.group = committed_;
        op.file = first.file;
        op.line = first.line;
        for (int lane = 0; lane < 32; ++lane)
            if (static_cast<const WgmmaIssueLane*>(lanes[lane])->descriptor != first.descriptor)
                return site + ": lanes 0 and " + std::to_string(lane) +
                       " give different descriptors of B";
        std::string error = wgmma_b_offsets(first.descriptor, proxy.bytes(), op.columns, op.b);
        if (!error.empty()) return site + " with " + error;
        error = unfenced_b(op, proxy, "the wgmma's issue");
        if (!error.empty()) return error;
        const float poison = std::nanf("");
        const int values = op.columns / 2;
        for (int lane = 0; lane < 32; ++lane) {
            const auto& mine = *static_cast<const WgmmaIssueLane*>(lanes[lane]);
            std::memcpy(op.a[lane], mine.a, sizeof op.a[lane]);
            op.d[lane] = mine.d;
            bool continues_chain = false;
            for (const Op& pending : ops_) {
                const float* other = pending.d[lane];
                if (other == mine.d && pending.columns == op.columns)
                    continues_chain = true;
                else if (other < mine.d + values && mine.d < other + pending.columns / 2)
                    return site + ": lane " + std::to_string(lane) +
                           "'s accumulators overlap those of the pending wgmma at " +
                           call_site(pending.file, pending.line) + " without being the same";
            }
            // C of a chain's first wgmma is what the accumulators hold now; the others' C is
            // the result of the wgmma before them, handed on when it retires.
            if (!continues_chain) std::memcpy(op.c[lane], mine.d, values * sizeof(float));
            for (int i = 0; i < values; ++i) mine.d[i] = poison;
        }
        ops_.push_back(op);
        return "";
    }

    // wgmma.wait_group N at `file`:`line`: completes, in issue order, every wgmma of the
    // committed groups but the newest N; "" or what is wrong with one of them.
    std::string wait(int pending_groups, const AsyncProxy& proxy, const char* file, int line) {
        fenced_ = false;
        const std::string wait_site = "the wgmma_wait at " + call_site(file, line);
        size_t retired = 0;
        for (; retired < ops_.size() && ops_[retired].group < committed_ - pending_groups;
             ++retired) {
            const std::string error = unfenced_b(ops_[retired], proxy, wait_site + " retiring it");
            if (!error.empty()) return error;
            complete(retired, proxy);
        }
        ops_.erase(ops_.begin(), ops_.begin() + retired);
        return "";
    }

    // "" if the warp has no wgmma in flight, else what it leaves unretired.
    std::string unretired() const {
        if (ops_.empty()) return "";
        size_t uncommitted = 0;
        for (const Op& op : ops_) uncommitted += op.group >= committed_;
        return std::to_string(ops_.size()) + " wgmma not retired when it exits (the first " +
               "issued at " + call_site(ops_.front().file, ops_.front().line) + ", " +
               std::to_string(uncommitted) +
               " never committed): every wgmma must be committed (wgmma_commit) and retired "
               "(wgmma_wait) before the kernel ends";
    }

  private:
    // One wgmma as this warp issued it.
    struct Op {
        int columns;        // N
        uint32_t a[32][4];  // each lane's A fragment
        float* d[32];       // each lane's N / 2 accumulators
        float c[32][WGMMA_MAX_COLUMNS / 2];  // each lane's C: see issue()
        uint32_t b[WGMMA_MAX_COLUMNS][8];    // the shared-memory byte of B[k][n] at b[n][k]
        int group;          // the groups committed before it was issued: the group it belongs to
        const char* file;
        int line;
    };

    // "" if every byte of B that `op` reads is visible to the asynchronous proxy, else which is
    // not; `when` names the instruction by which it must be.
    static std::string unfenced_b(const Op& op, const AsyncProxy& proxy, const std::string& when) {
        for (int n = 0; n < op.columns; ++n)
            for (int k = 0; k < 8; ++k) {
                const long writer = proxy.unfenced_writer(op.b[n][k]);
                if (writer >= 0)
                    return "wgmma at " + call_site(op.file, op.line) + " reads B at byte " +
                           std::to_string(op.b[n][k]) + " of shared memory, which thread " +
                           std::to_string(writer) +
                           " wrote (a landed cp.async or store_wgmma_operand) with no "
                           "fence_async_proxy_shared in that thread between the write and " +
                           when +
                           ": the asynchronous proxy the tensor cores read through may not see it";
            }
        return "";
    }

    // Computes ops_[index] for the warp and writes its D: into the next wgmma of its chain as
    // that one's C, or into the accumulators where the chain ends.
    void complete(size_t index, const AsyncProxy& proxy) {
        Op& op = ops_[index];
        float a[16][8], b[8][WGMMA_MAX_COLUMNS];
        for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            a[g][t] = tf32_operand(op.a[lane][0]);
            a[g + 8][t] = tf32_operand(op.a[lane][1]);
            a[g][t + 4] = tf32_operand(op.a[lane][2]);
            a[g + 8][t + 4] = tf32_operand(op.a[lane][3]);
        }
        for (int n = 0; n < op.columns; ++n)
            for (int k = 0; k < 8; ++k) {
                uint32_t bits;
                std::memcpy(&bits, proxy.memory() + op.b[n][k], 4);
                b[k][n] = tf32_operand(bits);
            }
        for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            float* out = op.d[lane];
            for (size_t later = index + 1; later < ops_.size(); ++later)
                if (ops_[later].d[lane] == op.d[lane]) {
                    out = ops_[later].c[lane];
                    break;
                }
            for (int j = 0; j < op.columns / 8; ++j)
                for (int i = 0; i < 4; ++i) {
                    const int row = g + 8 * (i / 2), column = 8 * j + 2 * t + i % 2;
                    float sum = op.c[lane][4 * j + i];
                    for (int k = 0; k < 8; ++k) sum += a[row][k] * b[k][column];
                    out[4 * j + i] = sum;
                }
        }
    }

    // In issue order; the first `retired` by a wait are a prefix, groups never decrease.
    std::vector<Op> ops_;
    int committed_ = 0;
    bool fenced_ = false;
};

// The wgmma of the current thread's warp.
WgmmaQueue& wgmma_queue();

// The warp collectives of wgmma_tf32_m64n64k8 and _m64n128k8, wgmma_fence, wgmma_commit and wgmma_wait<N>
// (lanes[i] is lane i's WgmmaIssueLane or WgmmaSyncLane).
inline void complete_wgmma_issue(void* const lanes[32]) {
    auto* queue = static_cast<const WgmmaIssueLane*>(lanes[0])->queue;
    const std::string error = queue->issue(lanes, async_proxy());
    if (!error.empty()) report(error);
}

inline void complete_wgmma_fence(void* const lanes[32]) {
    static_cast<const WgmmaSyncLane*>(lanes[0])->queue->fence();
}

inline void complete_wgmma_commit(void* const lanes[32]) {
    static_cast<const WgmmaSyncLane*>(lanes[0])->queue->commit();
}

inline void complete_wgmma_wait(void* const lanes[32]) {
    const auto& first = *static_cast<const WgmmaSyncLane*>(lanes[0]);
    const std::string error =
        first.queue->wait(first.pending_groups, async_proxy(), first.file, first.line);
    if (!error.empty()) report(error);
}

}  // namespace whorl_emu
