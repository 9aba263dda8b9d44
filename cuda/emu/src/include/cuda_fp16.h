// cuda_fp16.h for the CPU emulator (cuda/emu): the few half-precision
// conversions the kernels use, through the compiler's _Float16 (IEEE
// binary16, round to nearest even; GCC >= 12, Clang >= 15 on x86-64).
#pragma once
#include <cstdint>
#include <cstring>

struct __half {
  uint16_t x;
};

inline __half __ushort_as_half(uint16_t h) { return __half{h}; }
inline uint16_t __half_as_ushort(__half h) { return h.x; }

inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.x, 2);
  return (float)f;
}

inline __half __float2half_rn(float f) {
  const _Float16 h = (_Float16)f;
  __half r;
  std::memcpy(&r.x, &h, 2);
  return r;
}
