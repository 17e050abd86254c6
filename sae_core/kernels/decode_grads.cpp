// Both gradients of a sparse decode, sum_m vals[m] * table[cols[m]] per row, in one pass over the pairs grouped
// by feature:
//   grad_vals[m]  = grad[row m] . table[col m]
//   grad_table[f] = sum over the pairs m of feature f of vals[m] * grad[row m]
// Each feature's table row is read once, and each pair's gradient row once for both sums. PyTorch takes two
// passes with random reads of 1 KB rows each (embedding_bag's per-sample-weight backward, then an embedding_bag
// over the feature order), rounds both results to bfloat16 in a bfloat16 step, and a cast to float32 follows.
// Here both accumulate and come out in float32.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

constexpr int64_t LANES = 16;  // independent partial sums, so the dot vectorises without reassociating floats

// For one pair: its gradient row's dot with the feature's row `w`, and `v` times that gradient row added to `acc`.
template <typename T>
float dot_and_add(const T* __restrict g, const float* __restrict w, float v, float* __restrict acc, int64_t d) {
    float lanes[LANES] = {};
    int64_t whole = d / LANES * LANES;
    for (int64_t c = 0; c < whole; c += LANES)
        for (int64_t j = 0; j < LANES; ++j) {
            float gj = load(g, c + j);
            lanes[j] += gj * w[c + j];
            acc[c + j] += v * gj;
        }
    float dot = 0;
    for (int64_t c = whole; c < d; ++c) {
        float gc = load(g, c);
        dot += gc * w[c];
        acc[c] += v * gc;
    }
    for (int64_t j = 0; j < LANES; ++j) dot += lanes[j];
    return dot;
}

template <typename T>
void features_decode_grads(const T* grad, const T* table, const float* vals, const int64_t* order,
                           const int64_t* rows, const int64_t* offsets, int64_t n_feat, int64_t n_pairs, int64_t d,
                           float* grad_vals, float* grad_table, int64_t f_begin, int64_t f_end) {
    std::vector<float> w(d);
    for (int64_t f = f_begin; f < f_end; ++f) {
        for (int64_t c = 0; c < d; ++c) w[c] = load(table + f * d, c);
        float* acc = grad_table + f * d;
        std::fill(acc, acc + d, 0.0f);
        int64_t stop = f + 1 < n_feat ? offsets[f + 1] : n_pairs;
        for (int64_t i = offsets[f]; i < stop; ++i) {
            int64_t m = order[i];
            grad_vals[m] = dot_and_add(grad + rows[i] * d, w.data(), vals[m], acc, d);
        }
    }
}

template <typename T>
void decode_grads(const T* grad, const T* table, const float* vals, const int64_t* order, const int64_t* rows,
                  const int64_t* offsets, int64_t n_feat, int64_t n_pairs, int64_t d, float* grad_vals,
                  float* grad_table, int64_t threads) {
    // Threads take runs of features holding equal shares of the pairs (a feature's pairs start at offsets[f]).
    threads = std::max<int64_t>(1, std::min(threads, n_feat));
    std::vector<int64_t> bounds{0};
    for (int64_t t = 1; t < threads; ++t)
        bounds.push_back(std::lower_bound(offsets, offsets + n_feat, n_pairs * t / threads) - offsets);
    bounds.push_back(n_feat);
    run_ranges(bounds, [=](int64_t begin, int64_t end) {
        features_decode_grads(grad, table, vals, order, rows, offsets, n_feat, n_pairs, d, grad_vals, grad_table,
                              begin, end);
    });
}

}  // namespace

extern "C" {

void decode_grads_float32(const float* grad, const float* table, const float* vals, const int64_t* order,
                          const int64_t* rows, const int64_t* offsets, int64_t n_feat, int64_t n_pairs, int64_t d,
                          float* grad_vals, float* grad_table, int64_t threads) {
    decode_grads(grad, table, vals, order, rows, offsets, n_feat, n_pairs, d, grad_vals, grad_table, threads);
}

void decode_grads_bfloat16(const uint16_t* grad, const uint16_t* table, const float* vals, const int64_t* order,
                           const int64_t* rows, const int64_t* offsets, int64_t n_feat, int64_t n_pairs, int64_t d,
                           float* grad_vals, float* grad_table, int64_t threads) {
    decode_grads(grad, table, vals, order, rows, offsets, n_feat, n_pairs, d, grad_vals, grad_table, threads);
}
}
