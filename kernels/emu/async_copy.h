// cp.async on the CPU: the asynchronous global-to-shared copies of kernels/whorl.cuh's
// cp_async_16 (and _cached) / cp_async_4 / cp_async_commit / cp_async_wait<N>, made as strict
// as PTX allows so that a kernel which reads a copy's destination too early gets NaN instead of
// the right value.
//
// Each thread keeps its own copies. Issuing one fills its destination with NaN at once and
// keeps the source bytes (or zeros, for a zero-filling copy); cp.async.commit_group closes the
// open group; cp.async.wait_group N lands every copy of all but the newest N committed groups.
// Copies never committed are never landed by a wait (PTX does not wait for them either).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace whorl_emu {

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

    // cp.async.wait_group N: lands every copy of the committed groups but the newest N.
    void wait(int pending_groups) {
        size_t kept = 0;
        for (Copy& copy : copies_) {
            if (copy.group < committed_ - pending_groups)
                std::memcpy(copy.destination, copy.data, copy.bytes);
            else
                copies_[kept++] = copy;
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

}  // namespace whorl_emu
