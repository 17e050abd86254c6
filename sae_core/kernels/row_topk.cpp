// The k largest values of every row of a [rows, cols] matrix, two passes over each row.
//
// The first pass takes the maximum of each of `groups` strided column groups ({g, g + groups, ...}), elementwise
// across groups, which the compiler vectorises. The k-th largest of those maxima is a lower bound on the row's
// k-th largest value, since k groups hold a value at least that large. The second pass reads only the groups
// whose maximum reaches the bound (about k of them, from cache), keeps the values at or above it (usually
// little more than k) and cuts them to the k largest. PyTorch's CPU top-k copies and partially sorts every row. NaN counts as
// larger than every number, as torch.topk orders it, so a broken pre-activation reaches the loss.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr int64_t MIN_GROUPS = 256;
constexpr int64_t PER_GROUP = 32;
// At least MIN_GROUPS groups (8192 columns: 256 of 32, fastest of 128-512 here), else groups of PER_GROUP columns,
// so that the second pass stays a few thousand reads however wide the row: with 1M columns in 256 groups it read
// 4096 scattered cache lines per group and ran slower than PyTorch.
int64_t group_count(int64_t cols) { return std::max(MIN_GROUPS, cols / PER_GROUP); }

inline float load(const float* p, int64_t i) { return p[i]; }

inline float load(const uint16_t* p, int64_t i) {  // bfloat16: the high half of a float32
    uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

inline float key(float v) { return v != v ? INFINITY : v; }

struct Candidate {
    float key, value;
    int64_t col;
};

inline bool larger(const Candidate& a, const Candidate& b) { return a.key > b.key; }

// Each strided group's maximum over the first `whole` columns (a multiple of `groups`): vectorised across groups.
template <typename T>
void group_maxima(const T* __restrict row, int64_t whole, int64_t groups,
                  float* __restrict maxima) {
    std::fill(maxima, maxima + groups, -INFINITY);
    for (int64_t c = 0; c < whole; c += groups)
        for (int64_t g = 0; g < groups; ++g) {
            float v = key(load(row, c + g));
            maxima[g] = v > maxima[g] ? v : maxima[g];
        }
}

template <typename T>
void keep_at_least(const T* __restrict row, int64_t begin, int64_t end, int64_t step,
                   float bound, std::vector<Candidate>& buf) {
    for (int64_t c = begin; c < end; c += step) {
        float v = load(row, c);
        if (key(v) >= bound) buf.push_back({key(v), v, c});
    }
}

template <typename T>
void rows_topk(const T* pre, int64_t row_begin, int64_t row_end, int64_t cols, int64_t k,
               float* vals, int64_t* idx) {
    std::vector<Candidate> buf;
    int64_t groups = group_count(cols), whole = cols / groups * groups;
    std::vector<float> maxima(groups), order(groups);
    for (int64_t r = row_begin; r < row_end; ++r) {
        const T* row = pre + r * cols;
        buf.clear();
        if (k <= groups && whole > 0) {
            group_maxima(row, whole, groups, maxima.data());
            std::copy(maxima.begin(), maxima.end(), order.begin());
            std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), [](float a, float b) { return a > b; });
            float bound = order[k - 1];
            // Only groups whose maximum reaches the bound can hold a value that does.
            for (int64_t g = 0; g < groups; ++g)
                if (maxima[g] >= bound) keep_at_least(row, g, whole, groups, bound, buf);
            keep_at_least(row, whole, cols, 1, bound, buf);
        }
        if (static_cast<int64_t>(buf.size()) < k) {  // no bound (k beyond the groups), or a bound that kept too few
            buf.clear();
            keep_at_least(row, 0, cols, 1, -INFINITY, buf);
        }
        std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), larger);
        for (int64_t j = 0; j < k; ++j) {
            vals[r * k + j] = buf[j].value;
            idx[r * k + j] = buf[j].col;
        }
    }
}

template <typename T>
void parallel_rows_topk(const T* pre, int64_t rows, int64_t cols, int64_t k, float* vals,
                        int64_t* idx, int64_t threads) {
    threads = std::max<int64_t>(1, std::min(threads, rows));
    std::vector<std::thread> pool;
    int64_t per = (rows + threads - 1) / threads;
    for (int64_t t = 1; t < threads; ++t) {
        int64_t begin = t * per, end = std::min(rows, begin + per);
        if (begin < end) pool.emplace_back(rows_topk<T>, pre, begin, end, cols, k, vals, idx);
    }
    rows_topk<T>(pre, 0, std::min(rows, per), cols, k, vals, idx);
    for (auto& th : pool) th.join();
}

}  // namespace

extern "C" {

// 0 < k <= cols is the caller's to check.
void row_topk_float32(const float* pre, int64_t rows, int64_t cols, int64_t k, float* vals,
                      int64_t* idx, int64_t threads) {
    parallel_rows_topk(pre, rows, cols, k, vals, idx, threads);
}

void row_topk_bfloat16(const uint16_t* pre, int64_t rows, int64_t cols, int64_t k, float* vals,
                       int64_t* idx, int64_t threads) {
    parallel_rows_topk(pre, rows, cols, k, vals, idx, threads);
}
}
