// cp.async on the CPU: the asynchronous global-to-shared copies of kernels/whorl.cuh's
// cp_async_16 (and _cached) / cp_async_4 / cp_async_commit / cp_async_wait<N>, made as strict
// as PTX allows so that a kernel which reads a copy's destination too early gets NaN instead of
// the right value.
//
// Each thread keeps its own copies. Issuing one fills its destination with NaN at once and
// keeps the source bytes (or zeros, for a zero-filling copy); cp.async.commit_group closes the
// open group; cp.async.wait_group N lands every copy of all but the newest N committed groups.
// Copies never committed are never landed by a wait (PTX does not wait for them either).
//
// A landed copy is visible to the threads of the block (after a barrier), but not yet to the
// asynchronous proxy through which wgmma reads shared memory: the thread that waited for it must
// call fence_async_proxy_shared first; so must a thread that stored a wgmma operand
// (store_wgmma_operand). AsyncProxy keeps, for the block's dynamic shared memory, which words
// hold such writes that their thread has not fenced since.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace whorl_emu {

// The block's dynamic shared memory as the asynchronous proxy sees it: for every 32-bit word,
// the thread whose cp.async or operand store last wrote it, and that thread's count of proxy
// fences then. A
// word is unfenced while its thread has not fenced since: a fence only advances a counter, so
// fencing costs nothing however much a thread has copied.
class AsyncProxy {
  public:
    // A block starts: `bytes` of dynamic shared memory at `memory`, `threads` threads, no word
    // landed.
    void reset(const unsigned char* memory, size_t bytes, size_t threads) {
        memory_ = memory;
        bytes_ = bytes;
        if (landed_any_ || words_.size() != (bytes + 3) / 4) words_.assign((bytes + 3) / 4, {});
        landed_any_ = false;
        fences_.assign(threads, 0);
    }

    const unsigned char* memory() const { return memory_; }
    size_t bytes() const { return bytes_; }

    // Thread `thread` wrote `bytes` at `destination`: a cp.async copy landed, or an operand
    // store. Writes to other memory (static __shared__ arrays, which wgmma does not read here)
    // are not tracked.
    void written(unsigned thread, const unsigned char* destination, size_t bytes) {
        if (destination < memory_ || destination >= memory_ + bytes_) return;
        const size_t first = (destination - memory_) / 4;
        const size_t end = std::min(words_.size(), first + (bytes + 3) / 4);
        for (size_t word = first; word < end; ++word) words_[word] = {thread + 1, fences_[thread]};
        landed_any_ = true;
    }

    // fence.proxy.async.shared::cta in thread `thread`: its writes become visible.
    void fence(unsigned thread) { ++fences_[thread]; }

    // The thread whose write at byte `offset` it has not fenced since, or -1.
    long unfenced_writer(size_t offset) const {
        const Word& word = words_[offset / 4];
        if (word.writer == 0 || word.fences != fences_[word.writer - 1]) return -1;
        return static_cast<long>(word.writer) - 1;
    }

  private:
    struct Word {
        // 1 + the thread that wrote here last, 0 if none has.
        unsigned writer;
        // That thread's fences when it wrote.
        unsigned fences;
    };
    const unsigned char* memory_ = nullptr;
    size_t bytes_ = 0;
    std::vector<Word> words_;
    // Whether words_ holds anything to clear at the next block.
    bool landed_any_ = false;
    // Per thread of the block, its proxy fences so far.
    std::vector<unsigned> fences_;
};

class AsyncCopies {
  public:
    // Forgets everything: a thread starts with no copies in flight.
    void reset() {
        copies_.clear();
        committed_ = 0;
    }

    // Starts a copy of `bytes` (at most 16) from `source` to `destination`, which reads NaN
    // until the copy lands; `zero_fill` copies zeros and never reads `source`.
    void issue(void* destination, const void* source, size_t bytes, bool zero_fill) {
        Copy copy{static_cast<unsigned char*>(destination), {}, bytes, committed_};
        if (!zero_fill) std::memcpy(copy.data, source, bytes);
        const float poison = std::nanf("");
        for (size_t i = 0; i + 4 <= bytes; i += 4) std::memcpy(copy.destination + i, &poison, 4);
        copies_.push_back(copy);
    }

    // cp.async.commit_group: the copies issued since the last commit form one group.
    void commit() { ++committed_; }

    // cp.async.wait_group N in thread `thread`: lands every copy of the committed groups but the
    // newest N, each unfenced in `proxy` until the thread's next proxy fence.
    void wait(int pending_groups, AsyncProxy& proxy, unsigned thread) {
        size_t kept = 0;
        for (Copy& copy : copies_) {
            if (copy.group < committed_ - pending_groups) {
                std::memcpy(copy.destination, copy.data, copy.bytes);
                proxy.written(thread, copy.destination, copy.bytes);
            } else {
                copies_[kept++] = copy;
            }
        }
        copies_.resize(kept);
    }

  private:
    struct Copy {
        unsigned char* destination;
        unsigned char data[16];
        size_t bytes;
        // The number of groups committed before it was issued: the group it belongs to.
        int group;
    };
    std::vector<Copy> copies_;
    int committed_ = 0;
};

// The copies of the thread (fiber) running now.
AsyncCopies& async_copies();

// The asynchronous proxy's view of the current block's dynamic shared memory.
AsyncProxy& async_proxy();

}  // namespace whorl_emu
