// minilstm's CUDA kernels for the CuPy backend (minilstm/cupy_backend.py). Each has a float32 and a float64
// instantiation (suffix _f32 / _f64) and is checked against the NumPy float64 reference in tests/test_cupy_backend.py.
// The math is the one written out in minilstm/lstm.py and minilstm/layers.py; gate order i, f, c~, o (Keras).
// Launch shapes: one thread per element for the pointwise kernels; one block per row for softmax cross-entropy and
// the attention weights; a grid fixed by the size, then one block, for the gradient's global norm.

#define MINILSTM_DEVICE __device__ __forceinline__

MINILSTM_DEVICE float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
MINILSTM_DEVICE double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }
MINILSTM_DEVICE float tanh_(float x) { return tanhf(x); }
MINILSTM_DEVICE double tanh_(double x) { return tanh(x); }
MINILSTM_DEVICE float exp_(float x) { return expf(x); }
MINILSTM_DEVICE double exp_(double x) { return exp(x); }

// gates (B, 4H) holds x @ kernel + bias on entry and the activated gates on exit; z_recurrent = h_prev @ U.
template <typename T>
MINILSTM_DEVICE void lstm_cell_forward(T* gates, const T* z_recurrent, const T* c_prev, T* c, T* h, int batch,
                                       int units) {
    const long long n = (long long)batch * units;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const long long b = e / units, j = e % units, row = b * 4LL * units;
        T* g = gates + row;
        const T* zr = z_recurrent + row;
        const T i = sigmoid_(g[j] + zr[j]);
        const T f = sigmoid_(g[units + j] + zr[units + j]);
        const T cc = tanh_(g[2 * units + j] + zr[2 * units + j]);
        const T o = sigmoid_(g[3 * units + j] + zr[3 * units + j]);
        g[j] = i;
        g[units + j] = f;
        g[2 * units + j] = cc;
        g[3 * units + j] = o;
        const T c_new = f * c_prev[e] + i * cc;
        c[e] = c_new;
        h[e] = o * tanh_(c_new);
    }
}

// dh = dh_recurrent (+ dh_output unless null); writes dz (B, 4H) and dc_prev (may alias dc).
template <typename T>
MINILSTM_DEVICE void lstm_cell_backward(const T* gates, const T* c_prev, const T* c, const T* dh_recurrent,
                                        const T* dh_output, const T* dc, T* dz, T* dc_prev, int batch, int units) {
    const long long n = (long long)batch * units;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const long long b = e / units, j = e % units, row = b * 4LL * units;
        const T* g = gates + row;
        T* d = dz + row;
        const T i = g[j], f = g[units + j], cc = g[2 * units + j], o = g[3 * units + j];
        const T dh = dh_output ? dh_recurrent[e] + dh_output[e] : dh_recurrent[e];
        const T tanh_c = tanh_(c[e]);
        const T dc_total = dc[e] + dh * o * (T(1) - tanh_c * tanh_c);
        d[j] = dc_total * cc * i * (T(1) - i);
        d[units + j] = dc_total * c_prev[e] * f * (T(1) - f);
        d[2 * units + j] = dc_total * i * (T(1) - cc * cc);
        d[3 * units + j] = dh * tanh_c * o * (T(1) - o);
        dc_prev[e] = dc_total * f;
    }
}

// out[n, :] = table[ids[n], :] + bias: the one-hot input projection as a gather.
template <typename T>
MINILSTM_DEVICE void gather_rows_add(const T* table, const long long* ids, const T* bias, T* out, long long rows,
                                     int width) {
    const long long n = rows * width;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const long long r = e / width, k = e % width;
        out[e] = table[ids[r] * width + k] + bias[k];
    }
}

// out[v, :] += sum of values[order[s], :] for s in [seg_start[v], seg_start[v + 1]): the scatter-add of the
// one-hot gradient, with the rows grouped by id beforehand (order = a stable argsort of ids) so that every sum is
// taken in a fixed order: deterministic, no atomics. Grid: (vocab, ceil(width / blockDim.x)).
template <typename T>
MINILSTM_DEVICE void scatter_add_sorted(T* out, const long long* order, const long long* seg_start, const T* values,
                                        int width) {
    const int v = blockIdx.x;
    const int k = blockIdx.y * blockDim.x + threadIdx.x;
    if (k >= width) return;
    T sum = T(0);
    for (long long s = seg_start[v]; s < seg_start[v + 1]; ++s) sum += values[order[s] * width + k];
    out[(long long)v * width + k] += sum;
}

// One block per row: stable log-softmax, the row's loss -log p[target] and argmax hit (written per row, summed
// later in a fixed order), and d_logits = (softmax - onehot) * grad_scale. Ties in the argmax go to the lowest
// index, as numpy's argmax. A negative target (IGNORE, a padding position under --mask-padding) gives loss 0, no
// hit and a zero gradient row. blockDim.x must be a power of two, 2 to 1024.
// With label_smoothing eps > 0 the target is q = (1 - eps) onehot + eps / V (minilstm/layers.py): the loss is
// log(sum exp(z - max)) - (1 - eps)(z_y - max) - (eps / V) sum_k (z_k - max), which takes one more block sum, and
// d_logits = (softmax - q) * grad_scale. eps = 0 computes exactly what it computed without smoothing.
template <typename T>
MINILSTM_DEVICE void softmax_cross_entropy(const T* logits, const long long* targets, double grad_scale, T* d_logits,
                                           double* row_loss, int* row_hit, int vocab, double label_smoothing) {
    // blockDim.x * (sizeof(T) + sizeof(int) + 2 * sizeof(double))
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    T* best_value = reinterpret_cast<T*>(shared_bytes);
    int* best_index = reinterpret_cast<int*>(best_value + blockDim.x);
    double* partial = reinterpret_cast<double*>(best_index + blockDim.x);  // 8-aligned: blockDim.x even
    double* partial_shifted = partial + blockDim.x;
    const long long r = blockIdx.x;
    const T* z = logits + r * vocab;
    T* d = d_logits + r * vocab;
    const int t = threadIdx.x;

    T top = z[0];
    int top_index = -1;  // -1: this thread saw no element
    for (int k = t; k < vocab; k += blockDim.x) {
        if (top_index < 0 || z[k] > top) {  // k grows, so a tie keeps the lower index
            top = z[k];
            top_index = k;
        }
    }
    best_value[t] = top;
    best_index[t] = top_index;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) {
            const T other = best_value[t + stride];
            const int other_index = best_index[t + stride];
            if (other_index >= 0 && (best_index[t] < 0 || other > best_value[t] ||
                                     (other == best_value[t] && other_index < best_index[t]))) {
                best_value[t] = other;
                best_index[t] = other_index;
            }
        }
        __syncthreads();
    }
    const T row_max = best_value[0];
    const int argmax = best_index[0];

    double sum = 0.0;
    for (int k = t; k < vocab; k += blockDim.x) {
        const T e = exp_(z[k] - row_max);
        d[k] = e;
        sum += (double)e;
    }
    partial[t] = sum;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) partial[t] += partial[t + stride];
        __syncthreads();
    }
    const double total = partial[0];
    const long long target = targets[r];
    if (target < 0) {  // IGNORE: a padding position under --mask-padding (the whole block takes this branch)
        for (int k = t; k < vocab; k += blockDim.x) d[k] = T(0);
        if (t == 0) {
            row_loss[r] = 0.0;
            row_hit[r] = 0;
        }
        return;
    }
    const double off = label_smoothing / vocab;     // every class's share of eps
    const double on = 1.0 - label_smoothing + off;  // the true class's; 1 and 0 when eps = 0: p - 0.0 is p
    double shifted_sum = 0.0;                       // sum_k (z_k - max): the smoothed loss's extra term
    if (label_smoothing != 0.0) {                   // a kernel argument: the whole block takes this branch or none
        double s = 0.0;
        for (int k = t; k < vocab; k += blockDim.x) s += (double)(z[k] - row_max);
        partial_shifted[t] = s;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (t < stride) partial_shifted[t] += partial_shifted[t + stride];
            __syncthreads();
        }
        shifted_sum = partial_shifted[0];
    }
    for (int k = t; k < vocab; k += blockDim.x) {
        const double p = (double)d[k] / total;
        d[k] = (T)((p - (k == target ? on : off)) * grad_scale);
    }
    if (t == 0) {
        const double target_term = (double)(z[target] - row_max);
        row_loss[r] = label_smoothing == 0.0
                          ? log(total) - target_term
                          : log(total) - (1.0 - label_smoothing) * target_term - off * shifted_sum;
        row_hit[r] = argmax == target;
    }
}

// The optimizers: one step each over the flat parameter buffer (math in minilstm/optim.py). grad_scale points to the
// clipping factor computed on the device by global_norm_scale (so clipping never waits for the GPU), rounded to T
// and applied to each gradient element as it is read; null: no clipping, the gradient as it is.
template <typename T>
MINILSTM_DEVICE T scaled_gradient(const T* grads, long long e, const double* grad_scale) {
    return grad_scale ? grads[e] * (T)*grad_scale : grads[e];
}

template <typename T>
MINILSTM_DEVICE void rmsprop_update(T* params, const T* grads, T* velocity, long long n, double learning_rate,
                                    double rho, double epsilon, int epsilon_inside_sqrt, const double* grad_scale) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const T g = scaled_gradient(grads, e, grad_scale);
        const T v = (T)rho * velocity[e] + (T)(1.0 - rho) * g * g;
        velocity[e] = v;
        const T denom = epsilon_inside_sqrt ? sqrt(v + (T)epsilon) : sqrt(v) + (T)epsilon;
        params[e] -= (T)learning_rate * g / denom;
    }
}

// step_size = lr / (1 - beta_1^t), bias_correction2_sqrt = sqrt(1 - beta_2^t), computed on the host per step.
template <typename T>
MINILSTM_DEVICE void adam_update(T* params, const T* grads, T* m, T* v, long long n, double step_size, double beta_1,
                                 double beta_2, double epsilon, double bias_correction2_sqrt,
                                 const double* grad_scale) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const T g = scaled_gradient(grads, e, grad_scale);
        const T m_new = (T)beta_1 * m[e] + (T)(1.0 - beta_1) * g;
        const T v_new = (T)beta_2 * v[e] + (T)(1.0 - beta_2) * g * g;
        m[e] = m_new;
        v[e] = v_new;
        params[e] -= (T)step_size * m_new / (sqrt(v_new) / (T)bias_correction2_sqrt + (T)epsilon);
    }
}

template <typename T>
MINILSTM_DEVICE void sgd_update(T* params, const T* grads, T* momentum_buffer, long long n, double learning_rate,
                                double momentum, const double* grad_scale) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const T b = (T)momentum * momentum_buffer[e] + scaled_gradient(grads, e, grad_scale);
        momentum_buffer[e] = b;
        params[e] -= (T)learning_rate * b;
    }
}

// The sum of every thread's value over the block, the same in every thread: a tree in dynamic shared memory
// (blockDim.x doubles; blockDim.x a power of two), so the order of the additions is fixed.
MINILSTM_DEVICE double block_sum(double value) {
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    double* shared = reinterpret_cast<double*>(shared_bytes);
    const int t = threadIdx.x;
    shared[t] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) shared[t] += shared[t + stride];
        __syncthreads();
    }
    return shared[0];
}

// The largest of every thread's value over the block, the same in every thread (as block_sum; call __syncthreads()
// before the next use of the shared array). A NaN wins (fmax would drop it), so a NaN score is not hidden.
MINILSTM_DEVICE double block_max(double value) {
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    double* shared = reinterpret_cast<double*>(shared_bytes);
    const int t = threadIdx.x;
    shared[t] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride && !(shared[t] >= shared[t + stride])) shared[t] = shared[t + stride];  // NaN wins
        __syncthreads();
    }
    return shared[0];
}

// The attention weights (math in minilstm/layers.py, masked_softmax): scores (rows of `sources`, row r of sentence
// r / steps) become, in place, a softmax over the row's first lengths[r / steps] positions (at least 1), and exactly
// 0 on the others. One block per row; dynamic shared memory blockDim.x doubles (blockDim.x a power of two).
template <typename T>
MINILSTM_DEVICE void masked_softmax(T* scores, const long long* lengths, int steps, int sources) {
    T* z = scores + (long long)blockIdx.x * sources;
    const int length = (int)lengths[blockIdx.x / steps];
    const int t = threadIdx.x;
    double top = (double)z[0];  // position 0 is always real
    for (int s = t; s < length; s += blockDim.x) top = fmax(top, (double)z[s]);
    const T row_max = (T)block_max(top);  // exact: the largest of T values
    __syncthreads();
    double sum = 0.0;
    for (int s = t; s < length; s += blockDim.x) {
        const T e = exp_(z[s] - row_max);
        z[s] = e;
        sum += (double)e;
    }
    const double total = block_sum(sum);
    for (int s = t; s < sources; s += blockDim.x) z[s] = s < length ? (T)((double)z[s] / total) : T(0);
}

// Its backward: d_scores = a * (d_a - sum_s a_s d_a_s) per row (0 where a = 0: the padding). Launch as above.
template <typename T>
MINILSTM_DEVICE void masked_softmax_backward(const T* weights, const T* d_weights, T* d_scores, int sources) {
    const long long row = (long long)blockIdx.x * sources;
    double dot = 0.0;
    for (int s = threadIdx.x; s < sources; s += blockDim.x) dot += (double)weights[row + s] * (double)d_weights[row + s];
    const double total = block_sum(dot);
    for (int s = threadIdx.x; s < sources; s += blockDim.x)
        d_scores[row + s] = (T)((double)weights[row + s] * ((double)d_weights[row + s] - total));
}

// The gradient's global norm, deterministically (no atomics: runs repeat bit for bit), in two launches. First
// partials[b] = the sum of x[e]^2, in double, over block b's elements (grid-stride; the grid depends on n alone).
// Dynamic shared memory: blockDim.x doubles.
template <typename T>
MINILSTM_DEVICE void sum_squares_partial(const T* x, long long n, double* partials) {
    double sum = 0.0;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        const double value = (double)x[e];
        sum += value * value;
    }
    const double total = block_sum(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Then one block: out[1] = the sum of the `count` partials, out[0] = the clipping factor
// clip_norm / max(sqrt(out[1]), clip_norm), plus (norm - norm): NaN where the norm is not finite, as Keras does.
// The update kernels read out[0] as their grad_scale.
extern "C" __global__ void global_norm_scale(const double* partials, int count, double clip_norm, double* out) {
    double sum = 0.0;
    for (int k = threadIdx.x; k < count; k += blockDim.x) sum += partials[k];
    const double total = block_sum(sum);
    if (threadIdx.x == 0) {
        const double norm = sqrt(total);
        out[0] = clip_norm / fmax(norm, clip_norm) + (norm - norm);
        out[1] = total;
    }
}

#define MINILSTM_INSTANTIATE(T, SUFFIX)                                                                            \
    extern "C" __global__ void lstm_cell_forward_##SUFFIX(T* gates, const T* z_recurrent, const T* c_prev, T* c,  \
                                                          T* h, int batch, int units) {                          \
        lstm_cell_forward<T>(gates, z_recurrent, c_prev, c, h, batch, units);                                     \
    }                                                                                                              \
    extern "C" __global__ void lstm_cell_backward_##SUFFIX(const T* gates, const T* c_prev, const T* c,           \
                                                           const T* dh_recurrent, const T* dh_output, const T* dc, \
                                                           T* dz, T* dc_prev, int batch, int units) {             \
        lstm_cell_backward<T>(gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev, batch, units);          \
    }                                                                                                              \
    extern "C" __global__ void gather_rows_add_##SUFFIX(const T* table, const long long* ids, const T* bias,      \
                                                        T* out, long long rows, int width) {                     \
        gather_rows_add<T>(table, ids, bias, out, rows, width);                                                   \
    }                                                                                                              \
    extern "C" __global__ void scatter_add_sorted_##SUFFIX(T* out, const long long* order,                        \
                                                           const long long* seg_start, const T* values,           \
                                                           int width) {                                           \
        scatter_add_sorted<T>(out, order, seg_start, values, width);                                              \
    }                                                                                                              \
    extern "C" __global__ void softmax_cross_entropy_##SUFFIX(const T* logits, const long long* targets,          \
                                                              double grad_scale, T* d_logits, double* row_loss,   \
                                                              int* row_hit, int vocab, double label_smoothing) {  \
        softmax_cross_entropy<T>(logits, targets, grad_scale, d_logits, row_loss, row_hit, vocab,                 \
                                 label_smoothing);                                                                 \
    }                                                                                                              \
    extern "C" __global__ void rmsprop_update_##SUFFIX(T* params, const T* grads, T* velocity, long long n,       \
                                                       double learning_rate, double rho, double epsilon,          \
                                                       int epsilon_inside_sqrt, const double* grad_scale) {       \
        rmsprop_update<T>(params, grads, velocity, n, learning_rate, rho, epsilon, epsilon_inside_sqrt,            \
                          grad_scale);                                                                             \
    }                                                                                                              \
    extern "C" __global__ void adam_update_##SUFFIX(T* params, const T* grads, T* m, T* v, long long n,           \
                                                    double step_size, double beta_1, double beta_2,               \
                                                    double epsilon, double bias_correction2_sqrt,                 \
                                                    const double* grad_scale) {                                   \
        adam_update<T>(params, grads, m, v, n, step_size, beta_1, beta_2, epsilon, bias_correction2_sqrt,          \
                       grad_scale);                                                                                \
    }                                                                                                              \
    extern "C" __global__ void sgd_update_##SUFFIX(T* params, const T* grads, T* momentum_buffer, long long n,    \
                                                   double learning_rate, double momentum,                         \
                                                   const double* grad_scale) {                                    \
        sgd_update<T>(params, grads, momentum_buffer, n, learning_rate, momentum, grad_scale);                    \
    }                                                                                                              \
    extern "C" __global__ void sum_squares_partial_##SUFFIX(const T* x, long long n, double* partials) {          \
        sum_squares_partial<T>(x, n, partials);                                                                    \
    }                                                                                                              \
    extern "C" __global__ void masked_softmax_##SUFFIX(T* scores, const long long* lengths, int steps,             \
                                                       int sources) {                                             \
        masked_softmax<T>(scores, lengths, steps, sources);                                                        \
    }                                                                                                              \
    extern "C" __global__ void masked_softmax_backward_##SUFFIX(const T* weights, const T* d_weights, T* d_scores, \
                                                                int sources) {                                    \
        masked_softmax_backward<T>(weights, d_weights, d_scores, sources);                                         \
    }

MINILSTM_INSTANTIATE(float, f32)
MINILSTM_INSTANTIATE(double, f64)
