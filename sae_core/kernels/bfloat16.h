// Reading a float32 or a bfloat16 input as a float, for kernels templated on the input's type.
#pragma once
#include <cstdint>
#include <cstring>

inline float load(const float* p, int64_t i) { return p[i]; }

inline float load(const uint16_t* p, int64_t i) {  // bfloat16: the high half of a float32
    uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}
