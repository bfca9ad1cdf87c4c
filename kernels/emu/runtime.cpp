// The emulator's runtime: fibers, the block scheduler, barriers, warp exchanges, launches.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emu.h"
#include "runtime.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace whorl_emu {

thread_local uint3 thread_index;
thread_local uint3 block_index;
thread_local dim3 block_dim;
thread_local dim3 grid_dim;

namespace {

constexpr size_t kStackBytes = 64 * 1024;

// Why a fiber stopped running.
enum class State { Ready, AtBarrier, AtWarp, Done };

struct Fiber {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    std::vector<unsigned char> stack;
    State state = State::Ready;
    uint3 index{};
    // Where it waits: the call site of its barrier or warp operation.
    const char* file = nullptr;
    int line = 0;
    // A pending warp operation.
    WarpOp op = WarpOp::Sync;
    unsigned mask = 0;
    uint32_t payload = 0;
    int argument = 0;
    int width = 32;
    uint32_t result = 0;
    // A pending warp collective: this lane's data and what completes the operation.
    void* lane_data = nullptr;
    WarpCollective complete = nullptr;
    // Its cp.async copies in flight.
    AsyncCopies copies;
};

// One OS thread's scheduler: the fibers of the block it runs.
struct Scheduler {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    std::vector<Fiber> fibers;
    Fiber* current = nullptr;
    EntryPoint entry = nullptr;
    void** args = nullptr;
    // The block's dynamic shared memory, between canaries (SHARED_GUARD, SHARED_TAIL_GUARD).
    std::vector<unsigned char> shared;
    // Which of it the asynchronous proxy (wgmma) may not see yet.
    AsyncProxy proxy;
    // Each warp's wgmma in flight.
    std::vector<WgmmaQueue> wgmma;
    std::string error;
};

// Canaries around a block's dynamic shared memory: SHARED_GUARD bytes before it (a multiple
// of 16, so the memory keeps the allocation's 16-byte alignment) and SHARED_TAIL_GUARD after
// it, the most a block may have on any GPU whorl runs on (227 KiB, sm_90), so that a launch
// giving a kernel less than it uses is reported rather than overrunning the heap. Their pattern
// is a NaN with a payload of its own: a read past the memory poisons results, a write over it
// is reported.
constexpr size_t SHARED_GUARD = 256;
constexpr size_t SHARED_TAIL_GUARD = 227 * 1024;
constexpr uint32_t SHARED_CANARY = 0x7fc0beefu;

thread_local Scheduler scheduler;

#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer in *save, and resumes the context whose stack pointer is `next`.
extern "C" void whorl_emu_switch(void** save, void* next);
asm(R"(
    .text
    .globl whorl_emu_switch
    .type whorl_emu_switch, @function
whorl_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size whorl_emu_switch, .-whorl_emu_switch
)");
#endif

void to_scheduler() {
    Fiber* fiber = scheduler.current;
#if defined(__x86_64__)
    whorl_emu_switch(&fiber->sp, scheduler.sp);
#else
    swapcontext(&fiber->context, &scheduler.context);
#endif
}

void to_fiber(Fiber& fiber) {
    scheduler.current = &fiber;
    thread_index = fiber.index;
#if defined(__x86_64__)
    whorl_emu_switch(&scheduler.sp, fiber.sp);
#else
    swapcontext(&scheduler.context, &fiber.context);
#endif
}

// Every fiber starts here: it runs the kernel, then parks as done.
void fiber_main() {
    scheduler.entry(scheduler.args);
    scheduler.current->state = State::Done;
    for (;;) to_scheduler();
}

void start_fiber(Fiber& fiber) {
    fiber.state = State::Ready;
    fiber.copies.reset();
    if (fiber.stack.empty()) fiber.stack.resize(kStackBytes);
#if defined(__x86_64__)
    // A stack that whorl_emu_switch "returns" into fiber_main from: saved MXCSR/x87 words,
    // six zeroed registers, then fiber_main's address at a 16-byte aligned slot.
    uintptr_t top = reinterpret_cast<uintptr_t>(fiber.stack.data() + fiber.stack.size());
    top &= ~uintptr_t(15);
    auto* slot = reinterpret_cast<uint64_t*>(top - 16);
    slot[0] = reinterpret_cast<uint64_t>(&fiber_main);
    slot[1] = 0;
    uint64_t* registers = slot - 6;
    for (int i = 0; i < 6; ++i) registers[i] = 0;
    auto* control = reinterpret_cast<uint32_t*>(registers - 1);
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    fiber.sp = registers - 1;
#else
    getcontext(&fiber.context);
    fiber.context.uc_stack.ss_sp = fiber.stack.data();
    fiber.context.uc_stack.ss_size = fiber.stack.size();
    fiber.context.uc_link = nullptr;
    makecontext(&fiber.context, fiber_main, 0);
#endif
}

std::string site(const Fiber& f) {
    return std::string(f.file ? f.file : "?") + ":" + std::to_string(f.line);
}

std::string thread_name(const Fiber& f) {
    return "thread (" + std::to_string(f.index.x) + "," + std::to_string(f.index.y) + "," +
           std::to_string(f.index.z) + ") of block (" + std::to_string(block_index.x) + "," +
           std::to_string(block_index.y) + "," + std::to_string(block_index.z) + ")";
}

int lane_of(const Fiber& f) {
    return (f.index.x + block_dim.x * (f.index.y + block_dim.y * f.index.z)) % 32;
}

// Completes a warp collective: every lane of the warp must take part.
std::string complete_collective(std::vector<Fiber*>& lanes) {
    Fiber& first = *lanes.front();
    if (lanes.size() != 32 || first.mask != 0xffffffffu)
        return "warp operation at " + site(first) + " needs all 32 lanes of the warp, but " +
               std::to_string(lanes.size()) + " take part";
    void* data[32];
    for (Fiber* f : lanes) data[lane_of(*f)] = f->lane_data;
    first.complete(data);
    for (Fiber* f : lanes) f->state = State::Ready;
    return "";
}

// Completes a warp operation whose live lanes have all arrived; "" or an error.
std::string complete_warp(std::vector<Fiber*>& lanes) {
    Fiber& first = *lanes.front();
    for (Fiber* f : lanes)
        if (f->op != first.op || f->line != first.line || f->file != first.file || f->mask != first.mask)
            return "warp divergence: lanes of one warp wait at different warp operations (" +
                   site(first) + " and " + site(*f) + ")";
    if (first.op == WarpOp::Collective) return complete_collective(lanes);
    uint32_t payloads[32] = {}, ballot = 0;
    bool present[32] = {};
    for (Fiber* f : lanes) {
        int lane = lane_of(*f);
        payloads[lane] = f->payload;
        present[lane] = true;
        if (f->payload) ballot |= 1u << lane;
    }
    for (Fiber* f : lanes) {
        int lane = lane_of(*f);
        int width = f->width, base = lane - lane % width, source = lane;
        switch (f->op) {
            case WarpOp::Shuffle: source = base + ((f->argument % width) + width) % width; break;
            case WarpOp::ShuffleDown:
                source = lane % width + f->argument < width ? lane + f->argument : lane;
                break;
            case WarpOp::ShuffleXor: {
                int other = lane ^ f->argument;
                source = other - other % width == base ? other : lane;
                break;
            }
            case WarpOp::Ballot: f->result = ballot & first.mask; continue;
            case WarpOp::Sync: f->result = 0; continue;
            case WarpOp::Collective: continue;
        }
        if (!present[source] || !((first.mask >> source) & 1u))
            return "warp shuffle at " + site(*f) + " reads lane " + std::to_string(source) +
                   ", which is not taking part";
        f->result = payloads[source];
    }
    for (Fiber* f : lanes) f->state = State::Ready;
    return "";
}

// Runs one warp of the current block as far as it goes before a barrier, completing its warp
// operations as its lanes arrive; "" or the first error. Warps run one after another, so a warp
// that reads what another warp has not yet written (a missing barrier) sees the poison.
std::string run_warp(size_t warp, size_t threads) {
    const size_t first = warp * 32, end = std::min(threads, first + 32);
    for (;;) {
        for (size_t i = first; i < end; ++i)
            if (scheduler.fibers[i].state == State::Ready) to_fiber(scheduler.fibers[i]);
        if (!scheduler.error.empty()) return scheduler.error;
        std::vector<Fiber*> lanes;
        for (size_t i = first; i < end; ++i) {
            Fiber& f = scheduler.fibers[i];
            if (f.state == State::Done) continue;
            if (f.state != State::AtWarp) return "";
            lanes.push_back(&f);
        }
        if (lanes.empty()) return "";
        std::string failure = complete_warp(lanes);
        if (!failure.empty()) return failure;
    }
}

// Fills the canaries around the current OS thread's dynamic shared memory.
void fill_shared_guards() {
    const size_t shared_end = scheduler.shared.size() - SHARED_TAIL_GUARD;
    for (size_t i = 0; i + 4 <= scheduler.shared.size(); i += 4)
        if (i < SHARED_GUARD || i >= shared_end)
            std::memcpy(&scheduler.shared[i], &SHARED_CANARY, 4);
}

// "" if the canaries around the dynamic shared memory are whole, else what overwrote them.
std::string shared_guards_broken() {
    const size_t shared_end = scheduler.shared.size() - SHARED_TAIL_GUARD;
    for (size_t i = 0; i + 4 <= scheduler.shared.size(); i += 4) {
        if (i >= SHARED_GUARD && i < shared_end) continue;
        uint32_t word;
        std::memcpy(&word, &scheduler.shared[i], 4);
        if (word != SHARED_CANARY)
            return "wrote outside the launch's " + std::to_string(shared_end - SHARED_GUARD) +
                   " bytes of dynamic shared memory (" +
                   (i < SHARED_GUARD ? "before it" : "past its end") +
                   "): the launch must give the kernel all it uses";
    }
    return "";
}

// Runs every fiber of the current block to completion; "" or the first error.
std::string run_block(size_t threads) {
    for (size_t i = 0; i < threads; ++i) {
        Fiber& f = scheduler.fibers[i];
        f.index = {static_cast<unsigned>(i % block_dim.x),
                   static_cast<unsigned>(i / block_dim.x % block_dim.y),
                   static_cast<unsigned>(i / (block_dim.x * block_dim.y))};
        start_fiber(f);
    }
    const float poison = std::nanf("");
    const size_t shared_end = scheduler.shared.size() - SHARED_TAIL_GUARD;
    for (size_t i = SHARED_GUARD; i + 4 <= shared_end; i += 4)
        std::memcpy(&scheduler.shared[i], &poison, 4);
    scheduler.proxy.reset(&scheduler.shared[SHARED_GUARD], shared_end - SHARED_GUARD, threads);
    scheduler.wgmma.resize((threads + 31) / 32);
    for (WgmmaQueue& queue : scheduler.wgmma) queue.reset();
    for (;;) {
        for (size_t warp = 0; warp * 32 < threads; ++warp) {
            std::string failure = run_warp(warp, threads);
            if (!failure.empty()) return failure;
        }
        size_t done = 0, at_barrier = 0;
        const Fiber* waiting = nullptr;
        const Fiber* finished = nullptr;
        for (size_t i = 0; i < threads; ++i) {
            const Fiber& f = scheduler.fibers[i];
            if (f.state == State::Done) {
                ++done;
                finished = &f;
            } else if (f.state == State::AtBarrier) {
                ++at_barrier;
                if (waiting && (waiting->line != f.line || waiting->file != f.file))
                    return "barrier divergence: " + thread_name(*waiting) + " waits at " +
                           site(*waiting) + " while " + thread_name(f) + " waits at " + site(f);
                waiting = &f;
            }
        }
        if (done == threads) {
            for (size_t warp = 0; warp < scheduler.wgmma.size(); ++warp) {
                std::string unretired = scheduler.wgmma[warp].unretired();
                if (!unretired.empty())
                    return "warp " + std::to_string(warp) + " of block (" +
                           std::to_string(block_index.x) + "," + std::to_string(block_index.y) +
                           "," + std::to_string(block_index.z) + "): " + unretired;
            }
            return "";
        }
        if (waiting && at_barrier + done == threads) {
            if (done > 0)
                return "barrier divergence: " + thread_name(*finished) +
                       " exited while other threads wait at __syncthreads() at " + site(*waiting);
            for (size_t i = 0; i < threads; ++i) scheduler.fibers[i].state = State::Ready;
            continue;
        }
        return "deadlock: threads wait at a __syncthreads() while others of their block wait at a "
               "warp operation";
    }
}

}  // namespace

void* dynamic_shared() { return scheduler.shared.data() + SHARED_GUARD; }

size_t dynamic_shared_bytes() {
    return scheduler.shared.size() - SHARED_GUARD - SHARED_TAIL_GUARD;
}

void syncthreads(const char* file, int line) {
    Fiber* f = scheduler.current;
    f->state = State::AtBarrier;
    f->file = file;
    f->line = line;
    to_scheduler();
}

void warp_collective(void* lane_data, WarpCollective complete, const char* file, int line) {
    Fiber* f = scheduler.current;
    f->lane_data = lane_data;
    f->complete = complete;
    warp_exchange(WarpOp::Collective, 0xffffffffu, 0, 0, 32, file, line);
}

AsyncCopies& async_copies() { return scheduler.current->copies; }

AsyncProxy& async_proxy() { return scheduler.proxy; }

WgmmaQueue& wgmma_queue() {
    return scheduler.wgmma[(scheduler.current - scheduler.fibers.data()) / 32];
}

void report(const std::string& message) {
    if (scheduler.error.empty()) scheduler.error = message;
}

uint32_t warp_exchange(WarpOp op, unsigned mask, uint32_t payload, int argument, int width,
                       const char* file, int line) {
    Fiber* f = scheduler.current;
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
        if (scheduler.error.empty())
            scheduler.error = "warp operation at " + std::string(file) + ":" +
                              std::to_string(line) + " with width " + std::to_string(width) +
                              " (must be a power of two up to 32)";
    }
    f->state = State::AtWarp;
    f->op = op;
    f->mask = mask;
    f->payload = payload;
    f->argument = argument;
    f->width = width;
    f->file = file;
    f->line = line;
    to_scheduler();
    return f->result;
}

}  // namespace whorl_emu

using namespace whorl_emu;

extern "C" int whorl_emu_kernel_count() { return kernel_count; }
extern "C" const char* whorl_emu_kernel_name(int i) { return kernels[i].name; }

// Runs kernel `name` over the grid; returns 0, or non-zero with a message in `error`.
extern "C" int whorl_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3],
                                size_t shared_bytes, void** args, char* error,
                                size_t error_len) {
    auto fail = [&](const std::string& message) {
        std::snprintf(error, error_len, "%s", message.c_str());
        return 1;
    };
    EntryPoint entry = nullptr;
    for (int i = 0; i < kernel_count; ++i)
        if (std::strcmp(kernels[i].name, name) == 0) entry = kernels[i].entry;
    if (!entry) return fail(std::string("no kernel named ") + name);
    size_t threads = size_t(block[0]) * block[1] * block[2];
    if (threads == 0 || threads > 1024) return fail("block of " + std::to_string(threads) + " threads");
    size_t blocks = size_t(grid[0]) * grid[1] * grid[2];
    std::atomic<size_t> next{0};
    std::mutex lock;
    std::string first_error;
    auto worker = [&]() {
        scheduler.fibers.resize(std::max(scheduler.fibers.size(), threads));
        scheduler.shared.assign(SHARED_GUARD + shared_bytes + SHARED_TAIL_GUARD, 0);
        fill_shared_guards();
        scheduler.entry = entry;
        scheduler.args = args;
        scheduler.error.clear();
        block_dim = {block[0], block[1], block[2]};
        grid_dim = {grid[0], grid[1], grid[2]};
        for (size_t b = next++; b < blocks; b = next++) {
            block_index = {static_cast<unsigned>(b % grid[0]),
                           static_cast<unsigned>(b / grid[0] % grid[1]),
                           static_cast<unsigned>(b / (size_t(grid[0]) * grid[1]))};
            std::string failure = run_block(threads);
            if (!failure.empty()) {
                std::lock_guard<std::mutex> guard(lock);
                if (first_error.empty()) first_error = std::string(name) + ": " + failure;
                next = blocks;
                return;
            }
        }
        // Once the OS thread's blocks are done: every block wrote into the same memory.
        std::string broken = shared_guards_broken();
        if (!broken.empty()) {
            std::lock_guard<std::mutex> guard(lock);
            if (first_error.empty()) first_error = std::string(name) + ": " + broken;
        }
    };
    size_t workers = std::min<size_t>(blocks, std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (size_t i = 1; i < workers; ++i) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
    return first_error.empty() ? 0 : fail(first_error);
}
