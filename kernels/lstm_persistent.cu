// Persistent recurrent kernels (docs/design.md, "The CuPy backend"): one cooperative launch runs every time step of one LSTM
// layer, forward or backward, instead of a cuBLAS GEMM and a cell kernel per step (two launches per step, ~5-10 us
// each from Python, while a step's arithmetic at batch 64, H 256 takes a few microseconds).
//
// Work split: block j owns hidden units [j * units_per_block, ...) - the four gate columns of each - and keeps the
// recurrent weights it needs in shared memory for the whole sequence: forward the columns of its units (H x 4u),
// backward the rows of its units (u x 4H). A grid-wide barrier (grid_barrier below) separates time steps; the
// state that crosses blocks (h_t forward, dz_t backward) is read with __ldcg (L2, not the non-coherent L1).
// Each block stages that state through shared memory a chunk at a time (`chunk` columns; the launcher picks the
// largest that fits), so one block reads each value once per step. Every sum runs in a fixed order: no atomics,
// results repeat bit for bit. Math: minilstm/lstm.py. Launcher and fallback: minilstm/cupy_backend.py.
// Shared memory is the dynamic kind only (also what lets tests/cuda_emulator run these kernels on a CPU).

#define MINILSTM_DEVICE __device__ __forceinline__

// The activations as in lstm.cu, written again: each .cu file is compiled alone (CuPy compiles a source string,
// with no include path of ours), so a shared header would have to be pasted in by the loader.
MINILSTM_DEVICE float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
MINILSTM_DEVICE double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }
MINILSTM_DEVICE float tanh_(float x) { return tanhf(x); }
MINILSTM_DEVICE double tanh_(double x) { return tanh(x); }

// A grid-wide barrier; it needs every block resident at once, which a cooperative launch guarantees. state[0]
// counts the blocks that have arrived, state[1] is the generation: the last block to arrive resets the count and
// bumps the generation, the others wait for the bump. Both start at 0 and every launch leaves the count at 0.
// Written here rather than taken from <cooperative_groups.h>: NVRTC, CuPy's compiler, cannot build that header
// without the CUDA toolkit's headers (and CCCL's) on its include path, which a pip-only install lacks (NVRTC 13.5).
MINILSTM_DEVICE void grid_barrier(unsigned int* state) {
    __syncthreads();  // the whole block has arrived and finished its writes
    if (threadIdx.x == 0) {
        volatile unsigned int* generation = state + 1;
        const unsigned int seen = *generation;
        __threadfence();  // this block's writes are visible everywhere before it counts as arrived
        if (atomicAdd(state, 1u) == gridDim.x - 1) {
            atomicExch(state, 0u);
            __threadfence();
            atomicAdd(state + 1, 1u);  // let the others go
        } else {
            while (*generation == seen) __nanosleep(32);
        }
        __threadfence();
    }
    __syncthreads();  // contract: nobody leaves before the barrier is done (the callers here sync again anyway)
}

// The units a block owns: [first, first + count).
struct Slice {
    int first, count;
};

MINILSTM_DEVICE Slice owned_units(int units, int units_per_block) {
    const int first = blockIdx.x * units_per_block;
    const int last = first + units_per_block < units ? first + units_per_block : units;
    return {first, last > first ? last - first : 0};
}

// Forward over all steps. gates (T, B, 4H): x-projection + bias on entry, activated gates on exit. hs, cs
// (T + 1, B, H): [0] holds the initial state on entry; [1..T] are written. recurrent_kernel (H, 4H).
// Shared memory: weights (H x 4u) | z (B x 4u) | staged h (B x (chunk + 1)), u = units_per_block.
template <typename T>
MINILSTM_DEVICE void lstm_forward_persistent(T* gates, const T* recurrent_kernel, T* hs, T* cs,
                                             unsigned int* barrier, int steps, int batch, int units,
                                             int units_per_block, int chunk) {
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    if (gridDim.x * units_per_block < units) __trap();  // a grid shrunk under us would leave units uncomputed
    const Slice own = owned_units(units, units_per_block);
    const int cols = 4 * own.count, four_units = 4 * units, stride = chunk + 1;  // +1: no bank conflicts on h rows
    T* weights = reinterpret_cast<T*>(shared_bytes);
    T* z = weights + (long long)units * 4 * units_per_block;
    T* staged = z + (long long)batch * 4 * units_per_block;
    const int t0 = threadIdx.x, threads = blockDim.x;

    // Local column lc = gate * count + s stands for global column gate * H + first + s.
    for (long long e = t0; e < (long long)units * cols; e += threads) {
        const int k = e / cols, lc = e % cols;
        weights[e] = recurrent_kernel[(long long)k * four_units + (lc / own.count) * units + own.first + lc % own.count];
    }
    for (int t = 0; t < steps; ++t) {
        T* g = gates + (long long)t * batch * four_units;
        const T* h_prev = hs + (long long)t * batch * units;
        for (int o = t0; o < batch * cols; o += threads) {
            const int b = o / cols, lc = o % cols;
            z[o] = g[(long long)b * four_units + (lc / own.count) * units + own.first + lc % own.count];
        }
        for (int k0 = 0; k0 < units; k0 += chunk) {
            const int width = units - k0 < chunk ? units - k0 : chunk;
            __syncthreads();  // the previous chunk's readers are done with `staged`
            for (int e = t0; e < batch * width; e += threads) {
                const int b = e / width, k = e % width;
                staged[b * stride + k] = __ldcg(h_prev + (long long)b * units + k0 + k);
            }
            __syncthreads();
            for (int o = t0; o < batch * cols; o += threads) {
                const int b = o / cols, lc = o % cols;
                const T* hrow = staged + b * stride;
                const T* wcol = weights + (long long)k0 * cols + lc;
                T sum = T(0);
                for (int k = 0; k < width; ++k) sum += hrow[k] * wcol[(long long)k * cols];
                z[o] += sum;
            }
        }
        __syncthreads();
        T* c_prev = cs + (long long)t * batch * units;
        T* c_next = c_prev + (long long)batch * units;
        T* h_next = hs + (long long)(t + 1) * batch * units;
        for (int p = t0; p < batch * own.count; p += threads) {
            const int b = p / own.count, s = p % own.count, j = own.first + s;
            const T* zb = z + b * cols;
            const T i = sigmoid_(zb[s]), f = sigmoid_(zb[own.count + s]);
            const T cc = tanh_(zb[2 * own.count + s]), o = sigmoid_(zb[3 * own.count + s]);
            T* gb = g + (long long)b * four_units;
            gb[j] = i;
            gb[units + j] = f;
            gb[2 * units + j] = cc;
            gb[3 * units + j] = o;
            const long long e = (long long)b * units + j;
            const T c = f * c_prev[e] + i * cc;
            c_next[e] = c;
            h_next[e] = o * tanh_(c);
        }
        if (t + 1 < steps) grid_barrier(barrier);  // h_{t+1} complete in every block before anyone reads it
    }
}

// Backward through time. gates, cs as left by the forward kernel; d_outputs (T, B, H) or null; dh, dc (B, H):
// dL/dh_T, dL/dc_T on entry, dL/dh_0, dL/dc_0 on exit; writes dz (T, B, 4H).
// Shared memory: weights (u x 4H) | dh (B x u) | dc (B x u) | staged dz (B x (chunk + 1)).
template <typename T>
MINILSTM_DEVICE void lstm_backward_persistent(const T* gates, const T* cs, const T* recurrent_kernel,
                                              const T* d_outputs, T* dh, T* dc, T* dz, unsigned int* barrier,
                                              int steps, int batch, int units, int units_per_block, int chunk) {
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    if (gridDim.x * units_per_block < units) __trap();
    const Slice own = owned_units(units, units_per_block);
    const int four_units = 4 * units, stride = chunk + 1, pairs = batch * own.count;
    T* weights = reinterpret_cast<T*>(shared_bytes);
    T* dh_own = weights + (long long)units_per_block * four_units;
    T* dc_own = dh_own + batch * units_per_block;
    T* staged = dc_own + batch * units_per_block;
    const int t0 = threadIdx.x, threads = blockDim.x;

    for (long long e = t0; e < (long long)own.count * four_units; e += threads)
        weights[e] = recurrent_kernel[(long long)(own.first + e / four_units) * four_units + e % four_units];
    for (int p = t0; p < pairs; p += threads) {
        const long long e = (long long)(p / own.count) * units + own.first + p % own.count;
        dh_own[p] = dh[e];
        dc_own[p] = dc[e];
    }
    // dh_own[b, s] = sum over all 4H columns of dz_next[b, :] * recurrent_kernel[first + s, :] (dz_next @ U^T).
    auto pull_dh = [&](const T* dz_next) {
        for (int p = t0; p < pairs; p += threads) dh_own[p] = T(0);
        for (int c0 = 0; c0 < four_units; c0 += chunk) {
            const int width = four_units - c0 < chunk ? four_units - c0 : chunk;
            __syncthreads();
            for (int e = t0; e < batch * width; e += threads) {
                const int b = e / width, k = e % width;
                staged[b * stride + k] = __ldcg(dz_next + (long long)b * four_units + c0 + k);
            }
            __syncthreads();
            for (int p = t0; p < pairs; p += threads) {
                const T* row = staged + (p / own.count) * stride;
                const T* w = weights + (long long)(p % own.count) * four_units + c0;
                T sum = T(0);
                for (int k = 0; k < width; ++k) sum += row[k] * w[k];
                dh_own[p] += sum;
            }
        }
    };  // no barrier needed after it, nor before the loop: thread p alone reads and writes dh_own[p], dc_own[p]
    for (int t = steps - 1; t >= 0; --t) {
        if (t < steps - 1) pull_dh(dz + (long long)(t + 1) * batch * four_units);
        const T* g = gates + (long long)t * batch * four_units;
        const T* c_prev = cs + (long long)t * batch * units;
        const T* c_now = c_prev + (long long)batch * units;
        const T* d_out = d_outputs ? d_outputs + (long long)t * batch * units : nullptr;
        T* d = dz + (long long)t * batch * four_units;
        for (int p = t0; p < pairs; p += threads) {
            const int b = p / own.count, j = own.first + p % own.count;
            const long long e = (long long)b * units + j;
            const T* gb = g + (long long)b * four_units;
            const T i = gb[j], f = gb[units + j], cc = gb[2 * units + j], o = gb[3 * units + j];
            const T dh_total = d_out ? dh_own[p] + d_out[e] : dh_own[p];
            const T tanh_c = tanh_(c_now[e]);
            const T dc_total = dc_own[p] + dh_total * o * (T(1) - tanh_c * tanh_c);
            T* db = d + (long long)b * four_units;
            db[j] = dc_total * cc * i * (T(1) - i);
            db[units + j] = dc_total * c_prev[e] * f * (T(1) - f);
            db[2 * units + j] = dc_total * i * (T(1) - cc * cc);
            db[3 * units + j] = dh_total * tanh_c * o * (T(1) - o);
            dc_own[p] = dc_total * f;
        }
        grid_barrier(barrier);  // dz_t complete in every block before anyone reads it
    }
    pull_dh(dz);  // dL/dh_0 = dz_0 @ U^T
    for (int p = t0; p < pairs; p += threads) {
        const long long e = (long long)(p / own.count) * units + own.first + p % own.count;
        dh[e] = dh_own[p];
        dc[e] = dc_own[p];
    }
}

#define MINILSTM_INSTANTIATE_PERSISTENT(T, SUFFIX)                                                                  \
    extern "C" __global__ void lstm_forward_persistent_##SUFFIX(T* gates, const T* recurrent_kernel, T* hs, T* cs, \
                                                                unsigned int* barrier, int steps, int batch,       \
                                                                int units, int units_per_block, int chunk) {       \
        lstm_forward_persistent<T>(gates, recurrent_kernel, hs, cs, barrier, steps, batch, units, units_per_block,  \
                                   chunk);                                                                          \
    }                                                                                                               \
    extern "C" __global__ void lstm_backward_persistent_##SUFFIX(                                                   \
        const T* gates, const T* cs, const T* recurrent_kernel, const T* d_outputs, T* dh, T* dc, T* dz,            \
        unsigned int* barrier, int steps, int batch, int units, int units_per_block, int chunk) {                   \
        lstm_backward_persistent<T>(gates, cs, recurrent_kernel, d_outputs, dh, dc, dz, barrier, steps, batch,      \
                                    units, units_per_block, chunk);                                                 \
    }

MINILSTM_INSTANTIATE_PERSISTENT(float, f32)
MINILSTM_INSTANTIATE_PERSISTENT(double, f64)
