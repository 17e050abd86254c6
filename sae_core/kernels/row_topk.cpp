// The k largest values of every row of a [rows, cols] matrix, two passes over each row and no sort.
//
// The first pass takes the maximum of each of `groups` strided column groups ({g, g + groups, ...}), elementwise
// across groups, which the compiler vectorises. The k-th largest of those maxima is a lower bound on the row's
// k-th largest value, since k groups hold a value at least that large. The second pass reads only the groups
// whose maximum reaches the bound (about k of them, from cache) and keeps the values at or above it (usually
// little more than k); the k-th largest of those decides which are kept. Both k-th largest values are found by
// counting, not sorting (`kth_largest`): nth_element's comparisons mispredict about half their branches, and
// took half the kernel's time. PyTorch's CPU top-k copies and partially sorts every row. NaN counts as larger
// than every number, as torch.topk orders it, so a broken pre-activation reaches the loss.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

namespace {

constexpr int64_t MIN_GROUPS = 256;
constexpr int64_t PER_GROUP = 32;
// At least MIN_GROUPS groups (8192 columns: 256 of 32, fastest of 128-512 here), else groups of PER_GROUP columns,
// so that the second pass stays a few thousand reads however wide the row: with 1M columns in 256 groups it read
// 4096 scattered cache lines per group and ran slower than PyTorch.
int64_t group_count(int64_t cols) { return std::max(MIN_GROUPS, cols / PER_GROUP); }

// An unsigned key in the order of the values, NaN above +inf (torch.topk's order): the sign bit set on
// non-negative floats and every bit flipped on negative ones.
inline uint32_t key(float v) {
    if (v != v) v = INFINITY;
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

// The key of a value read from a row of T. A bfloat16's keeps only its high 16 bits (a negative one's low bits,
// flipped, would be ones), so `kth_largest` need not search below `low_bit`: no bfloat16 holds those bits.
inline uint32_t key_of(const float*, float v) { return key(v); }
inline uint32_t key_of(const uint16_t*, float v) { return key(v) & 0xFFFF0000u; }
constexpr int low_bit(const float*) { return 0; }
constexpr int low_bit(const uint16_t*) { return 16; }
template <typename T>
inline uint32_t key_at(const T* row, int64_t c) { return key_of(row, load(row, c)); }

// The first pass's bound is found to bfloat16's precision whatever the type: still a lower bound on the k-th
// largest maximum, with half the counting passes for float32; the exact k-th largest comes from the candidates.
constexpr int BOUND_LOW_BIT = 16;

// The k-th largest of n keys (0 < k <= n), bit by bit from the top: the largest t with at least k keys >= t.
// Each count is a branch-free loop the compiler vectorises; keys have no bits below `low`.
uint32_t kth_largest(const uint32_t* __restrict keys, int64_t n, int64_t k, int low) {
    uint32_t t = 0;
    for (int bit = 31; bit >= low; --bit) {
        uint32_t trial = t | (1u << bit);
        int64_t count = 0;
        for (int64_t i = 0; i < n; ++i) count += keys[i] >= trial;
        if (count >= k) t = trial;
    }
    return t;
}

// Each strided group's maximum over the first `whole` columns (a multiple of `groups`), NaN as +inf: vectorised
// across groups. In floats: taking the keys here ran the pass at half the speed.
template <typename T>
void group_maxima(const T* __restrict row, int64_t whole, int64_t groups, float* __restrict maxima) {
    std::fill(maxima, maxima + groups, -INFINITY);
    for (int64_t c = 0; c < whole; c += groups)
        for (int64_t g = 0; g < groups; ++g) {
            float v = load(row, c + g);
            v = v != v ? INFINITY : v;
            maxima[g] = v > maxima[g] ? v : maxima[g];
        }
}

struct Candidates {
    std::vector<uint32_t> keys;
    std::vector<int64_t> cols;
    void clear() { keys.clear(); cols.clear(); }
    int64_t size() const { return static_cast<int64_t>(keys.size()); }
};

template <typename T>
void keep_at_least(const T* __restrict row, int64_t begin, int64_t end, int64_t step, uint32_t bound,
                   Candidates& buf) {
    for (int64_t c = begin; c < end; c += step) {
        uint32_t kc = key_at(row, c);
        if (kc >= bound) {
            buf.keys.push_back(kc);
            buf.cols.push_back(c);
        }
    }
}

// Where row r starts taking tied values, of `ties`: a hash of r, so no column wins ties in every row.
int64_t tie_start(int64_t r, int64_t ties) {
    uint64_t h = static_cast<uint64_t>(r) * 0x9E3779B97F4A7C15ull;
    return static_cast<int64_t>((h ^ (h >> 29)) % static_cast<uint64_t>(ties));
}

// Writes the k largest of row r's candidates: every one above the k-th largest key, then as many of the values
// tied with it as fill k, taken cyclically from `tie_start`. Bfloat16 rows tie often at the k-th value (a bucket
// near it holds about two of 8192 Gaussian values), and taking ties in the order they were met favoured the
// columns of the first groups in every row.
template <typename T>
void write_largest(const T* row, int64_t r, const Candidates& buf, int64_t k, int low, float* vals, int64_t* idx) {
    uint32_t kth = kth_largest(buf.keys.data(), buf.size(), k, low);
    int64_t out = 0, ties = 0;
    for (int64_t i = 0; i < buf.size(); ++i) {
        if (buf.keys[i] > kth && out < k) idx[out++] = buf.cols[i];  // fewer than k are above the k-th: a guard
        ties += buf.keys[i] == kth;
    }
    int64_t start = tie_start(r, ties), need = k - out;
    for (int64_t i = 0, tie = 0; i < buf.size() && out < k; ++i)
        if (buf.keys[i] == kth && (tie++ - start + ties) % ties < need) idx[out++] = buf.cols[i];
    for (int64_t j = 0; j < k; ++j) vals[j] = load(row, idx[j]);
}

template <typename T>
void rows_topk(const T* pre, int64_t row_begin, int64_t row_end, int64_t cols, int64_t k,
               float* vals, int64_t* idx) {
    Candidates buf;
    int64_t groups = group_count(cols), whole = cols / groups * groups;
    int low = low_bit(pre);
    std::vector<float> maxima(groups);
    std::vector<uint32_t> maxima_keys(groups);
    for (int64_t r = row_begin; r < row_end; ++r) {
        const T* row = pre + r * cols;
        buf.clear();
        if (k <= groups && whole > 0) {
            group_maxima(row, whole, groups, maxima.data());
            for (int64_t g = 0; g < groups; ++g) maxima_keys[g] = key_of(row, maxima[g]);
            uint32_t bound = kth_largest(maxima_keys.data(), groups, k, BOUND_LOW_BIT);
            // Only groups whose maximum reaches the bound can hold a value that does.
            for (int64_t g = 0; g < groups; ++g)
                if (maxima_keys[g] >= bound) keep_at_least(row, g, whole, groups, bound, buf);
            keep_at_least(row, whole, cols, 1, bound, buf);
        }
        if (buf.size() < k) {  // no bound (k beyond the groups), or a bound that kept too few
            buf.clear();
            keep_at_least(row, 0, cols, 1, 0u, buf);
        }
        write_largest(row, r, buf, k, low, vals + r * k, idx + r * k);
    }
}

template <typename T>
void parallel_rows_topk(const T* pre, int64_t rows, int64_t cols, int64_t k, float* vals,
                        int64_t* idx, int64_t threads) {
    threads = std::max<int64_t>(1, std::min(threads, rows));
    int64_t per = (rows + threads - 1) / threads;
    std::vector<int64_t> bounds;
    for (int64_t t = 0; t <= threads; ++t) bounds.push_back(std::min(rows, t * per));
    run_ranges(bounds, [=](int64_t begin, int64_t end) { rows_topk(pre, begin, end, cols, k, vals, idx); });
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
