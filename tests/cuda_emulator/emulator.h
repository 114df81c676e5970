// A CPU emulator for minilstm's CUDA kernels, so that CI - which has no GPU - runs them, not only compiles them.
//
// tests/cuda_emulator/__init__.py compiles a kernels/*.cu file as plain C++ with this header force-included and
// calls the kernels through ctypes. Every CUDA thread is a fiber (ucontext) on one OS thread; a fiber runs until
// it reaches __syncthreads(), a __nanosleep() (the back-off of a spin-wait: it lets the others run), or its end,
// and the scheduler releases a __syncthreads() once every thread of the block has reached it. Between barriers
// the threads of a block run one after another in an order that changes from phase to phase and from launch to
// launch (forward, reversed, shuffled), so a missing __syncthreads() shows up as a wrong result. A cooperative
// launch runs all blocks at once (a grid-wide barrier needs that) and interleaves them differently from launch to
// launch (see run_blocks), so a missing grid barrier shows too; a normal launch runs blocks one by one, so a
// kernel that waits for another block there spins until the emulator gives up - as it could hang on a GPU.
// Atomics are plain read-modify-writes (fibers switch only at the points named here), and after each one the
// scheduler may run other blocks before the rest of the atomic's block.
//
// What it checks beyond the arithmetic: kernel argument sizes against the kernel's parameter types (a mismatch is
// silent garbage on a real GPU), dynamic shared memory above the kernel's limit, a thread leaving while others of
// its block wait at __syncthreads(), waiting for ever, __trap(). Shared memory starts as 0xFF bytes (NaN as
// floats), so reading it before writing shows.
// What it cannot see: races between threads of different blocks inside one phase, the memory model (caches,
// fences), warp-level behaviour (warp shuffles and votes are not provided: a kernel using them does not build
// here), speed. Shared memory must be the dynamic kind, declared
// `extern __shared__ __align__(16) unsigned char shared_bytes[];` (the alignment is optional).
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define MINILSTM_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __restrict__ __restrict
#define __align__(n)  // `shared_bytes` below is defined 64-aligned; a weaker redeclaration would not compile

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// The builtins: the scheduler sets them before it switches to a thread's fiber.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

constexpr size_t EMU_SHARED_CAPACITY = 256 * 1024;
alignas(64) inline unsigned char shared_bytes[EMU_SHARED_CAPACITY];

template <typename T>
inline T __ldcg(const T* p) {
    return *p;
}
inline void __threadfence() {}
namespace emu {
inline void preempt();
}
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
    const unsigned int old = *address;
    *address = old + value;
    emu::preempt();
    return old;
}
inline unsigned int atomicExch(unsigned int* address, unsigned int value) {
    const unsigned int old = *address;
    *address = value;
    emu::preempt();
    return old;
}

namespace emu {

enum State { READY, AT_BLOCK_BARRIER, DONE };

constexpr uint64_t SPIN_LIMIT = 1000000;  // __nanosleep()s one thread may make in a launch before we call it a hang

struct Fiber {
    ucontext_t context;
    State state = READY;
    uint64_t spins = 0;
    dim3 block_index, thread_index;
};

constexpr size_t STACK_BYTES = 16 * 1024;  // our kernels need little; many fibers at once

inline ucontext_t scheduler;
inline std::vector<Fiber> fibers;
inline std::vector<char> stacks;
inline size_t current = 0;
inline const std::function<void()>* body = nullptr;
inline std::string error;

inline void fail(const std::string& message) {
    if (error.empty()) error = message;
}

inline void entry() {
    (*body)();
    fibers[current].state = DONE;  // returns to `scheduler` through uc_link
}

inline void wait(State barrier) {
    fibers[current].state = barrier;
    swapcontext(&fibers[current].context, &scheduler);
}

// After an atomic - where blocks talk to each other - the scheduler leaves this block for now and may run the others
// before the rest of its threads: so a block that signals before all its threads have written gets caught.
inline bool preempted = false;
inline void preempt() {
    preempted = true;
    wait(READY);
}

inline dim3 unflatten(size_t index, dim3 shape) {
    dim3 d;
    d.x = index % shape.x;
    d.y = (index / shape.x) % shape.y;
    d.z = index / ((size_t)shape.x * shape.y);
    return d;
}

// Run blocks [first, first + count) of the grid to completion, all resident at once.
inline void run_blocks(size_t first, size_t count, size_t shared, uint64_t seed) {
    const size_t per_block = (size_t)blockDim.x * blockDim.y * blockDim.z;
    const size_t n = count * per_block;
    fibers.assign(n, Fiber{});
    if (stacks.size() < n * STACK_BYTES) stacks.resize(n * STACK_BYTES);
    std::vector<std::vector<unsigned char>> block_shared(count, std::vector<unsigned char>(shared, 0xFF));
    for (size_t i = 0; i < n; ++i) {
        Fiber& f = fibers[i];
        f.block_index = unflatten(first + i / per_block, gridDim);
        f.thread_index = unflatten(i % per_block, blockDim);
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = stacks.data() + i * STACK_BYTES;
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = &scheduler;
        makecontext(&f.context, entry, 0);
    }
    std::mt19937_64 random(seed);
    std::vector<size_t> order(per_block);
    long loaded = -1;  // the block whose shared memory is in `shared_bytes`
    // Run the READY threads of `block` until each waits at a barrier or is done, in this phase's order.
    auto run_block = [&](size_t block, uint64_t phase) {
        for (size_t t = 0; t < per_block; ++t) order[t] = t;
        if ((phase + seed) % 3 == 1) std::reverse(order.begin(), order.end());
        if ((phase + seed) % 3 == 2) std::shuffle(order.begin(), order.end(), random);
        for (size_t t : order) {
            const size_t i = block * per_block + t;
            if (fibers[i].state != READY) continue;
            if (loaded != (long)block) {
                if (loaded >= 0) memcpy(block_shared[loaded].data(), shared_bytes, shared);
                memcpy(shared_bytes, block_shared[block].data(), shared);
                loaded = (long)block;
            }
            threadIdx = fibers[i].thread_index;
            blockIdx = fibers[i].block_index;
            current = i;
            swapcontext(&scheduler, &fibers[i].context);
            if (!error.empty()) return;
            if (preempted) return void(preempted = false);
        }
    };
    // Release `block`'s __syncthreads() once all its threads wait there; false if it cannot be released.
    auto release_block = [&](size_t block) {
        size_t live = 0, at_block = 0;
        for (size_t t = 0; t < per_block; ++t) {
            const State s = fibers[block * per_block + t].state;
            live += s != DONE;
            at_block += s == AT_BLOCK_BARRIER;
        }
        if (at_block == 0 || at_block < live) return false;  // nobody waits, or some are still on their way
        if (live < per_block)
            return fail("a thread left the kernel while others of its block wait at __syncthreads()"), false;
        for (size_t t = 0; t < per_block; ++t) fibers[block * per_block + t].state = READY;
        return true;
    };
    // How the blocks interleave, by launch (`seed` counts a kernel's launches, so three launches in a row see all
    // three): in lockstep (every block one phase at a time), or each block alone as far as it can go (until all its
    // threads are done or it waits for another block), first to last or last to first - so a missing grid barrier
    // lets one block read what another has not written yet.
    const int policy = (int)(seed % 3);
    for (uint64_t phase = 0;; ++phase) {
        if (policy == 0) {
            for (size_t b = 0; b < count && error.empty(); ++b) run_block(phase % 2 ? count - 1 - b : b, phase);
            for (size_t b = 0; b < count && error.empty(); ++b) release_block(b);
        } else {
            for (size_t b = 0; b < count && error.empty(); ++b) {
                const size_t block = policy == 1 ? b : count - 1 - b;
                for (uint64_t p = phase; error.empty(); ++p) {
                    run_block(block, p);
                    if (error.empty() && !release_block(block)) break;
                }
            }
        }
        if (!error.empty()) return;
        size_t live = 0, ready = 0;
        for (const Fiber& f : fibers) {
            live += f.state != DONE;
            ready += f.state == READY;
        }
        if (live == 0) return;
        if (ready == 0) return fail("every thread waits at a __syncthreads() that cannot complete");
    }
}

// Launch `kernel` with CUDA's argument convention: args[k] points to the value of parameter k, sizes[k] is its size.
template <typename... Params>
int launch(void (*kernel)(Params...), const char* name, const unsigned* grid, const unsigned* block, size_t shared,
           size_t shared_limit, int cooperative_launch, uint64_t seed, void** args, const size_t* sizes,
           int n_args) {
    error.clear();
    preempted = false;
    constexpr size_t n_params = sizeof...(Params);
    const size_t param_sizes[] = {sizeof(std::decay_t<Params>)..., 0};
    if ((size_t)n_args != n_params) {
        error = std::string(name) + ": " + std::to_string(n_args) + " arguments given, the kernel takes " +
                std::to_string(n_params);
        return 1;
    }
    for (size_t k = 0; k < n_params; ++k) {
        if (sizes[k] != param_sizes[k]) {
            error = std::string(name) + ": argument " + std::to_string(k) + " is " + std::to_string(sizes[k]) +
                    " bytes, the kernel's parameter is " + std::to_string(param_sizes[k]);
            return 1;
        }
    }
    if (shared > shared_limit || shared > EMU_SHARED_CAPACITY) {
        error = std::string(name) + ": " + std::to_string(shared) + " bytes of dynamic shared memory asked for, " +
                "the limit is " + std::to_string(std::min(shared_limit, EMU_SHARED_CAPACITY));
        return 1;
    }
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    const size_t per_block = (size_t)blockDim.x * blockDim.y * blockDim.z;
    const size_t blocks = (size_t)gridDim.x * gridDim.y * gridDim.z;
    if (per_block == 0 || per_block > 1024 || blocks == 0) {
        error = std::string(name) + ": invalid launch shape";
        return 1;
    }
    size_t k = 0;
    std::tuple<std::decay_t<Params>...> values{*static_cast<std::decay_t<Params>*>(args[k++])...};
    const std::function<void()> run = [&] { std::apply(kernel, values); };
    body = &run;
    if (cooperative_launch) {
        run_blocks(0, blocks, shared, seed);
    } else {
        for (size_t b = 0; b < blocks && error.empty(); ++b) run_blocks(b, 1, shared, seed + b);
    }
    if (!error.empty()) error = std::string(name) + ": " + error;
    return error.empty() ? 0 : 1;
}

}  // namespace emu

inline void __syncthreads() { emu::wait(emu::AT_BLOCK_BARRIER); }

inline void __trap() {
    emu::fail("__trap() called");
    emu::wait(emu::DONE);  // never resumed: the launch stops at the error
}

// The back-off inside a spin-wait: here, the moment to let the other threads (and blocks) run.
inline void __nanosleep(unsigned int) {
    if (++emu::fibers[emu::current].spins > emu::SPIN_LIMIT)
        emu::fail("a thread waited for ever (a grid barrier whose blocks were not all launched together?)");
    emu::wait(emu::READY);  // the scheduler stops the launch here if it failed
}

extern "C" const char* emu_last_error() { return emu::error.c_str(); }

// One exported launcher per kernel; the Python side generates these lines from the kernels' symbol names.
#define EMU_EXPORT(kernel)                                                                                         \
    extern "C" int emu_launch_##kernel(const unsigned* grid, const unsigned* block, size_t shared,                 \
                                       size_t shared_limit, int cooperative_launch, uint64_t seed, void** args,    \
                                       const size_t* sizes, int n_args) {                                          \
        return emu::launch(&kernel, #kernel, grid, block, shared, shared_limit, cooperative_launch, seed, args,    \
                           sizes, n_args);                                                                         \
    }
