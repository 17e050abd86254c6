// What the kernels share: reading a float32 or bfloat16 input as a float, and splitting work over threads.
#pragma once
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

inline float load(const float* p, int64_t i) { return p[i]; }

inline float load(const uint16_t* p, int64_t i) {  // bfloat16: the high half of a float32
    uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

// Runs work(bounds[t], bounds[t + 1]) for every t, one range per thread, the first on the calling thread.
template <typename Work>
void run_ranges(const std::vector<int64_t>& bounds, Work work) {
    std::vector<std::thread> pool;
    for (size_t t = 1; t + 1 < bounds.size(); ++t)
        if (bounds[t] < bounds[t + 1]) pool.emplace_back(work, bounds[t], bounds[t + 1]);
    work(bounds[0], bounds[1]);
    for (auto& th : pool) th.join();
}
