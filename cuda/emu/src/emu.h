// emu.h: what the kernels of cuda/ need from CUDA, on the CPU. The kernels
// compile as plain C++ after this header (libcuda_emu.cpp); every block runs
// its threads as fibers on one OS thread, switched at __syncthreads and at
// every warp-collective call, so block and warp synchronization keep their
// CUDA meaning. Blocks run one after another, hence __shared__ = static.
//
// It is a test device for the kernels' logic (indexing, tails, tie rules,
// argument layout), not a performance model and not a race detector.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct uint4 {
  unsigned x, y, z, w;
};
struct float4 {
  float x, y, z, w;
};

// EMU_SCHED marks the emulator's own code on the kernels' hot paths (the
// fiber scheduler, barriers, warp exchange): it touches no device memory
// and is left out of AddressSanitizer, whose checks there doubled the time
// of the GPU tests on the emulator.
#define EMU_SCHED __attribute__((no_sanitize_address))

// Hidden: calls from the kernels bind directly (no PLT) and inline.
namespace emu __attribute__((visibility("hidden"))) {

// The running thread's coordinates.
const dim3 &thread_idx();
unsigned lane();
extern dim3 block_idx, block_dim, grid_dim;

void syncthreads();  // every live thread of the block

// Slots are a warp's values at one warp barrier: v[l] is what lane l
// published, for each lane l in the mask lanes (the lanes live at the
// barrier).
struct Slots {
  const uint64_t *v;
  unsigned lanes;
};

// publish stores v as the running lane's value and waits until every live
// lane of the warp has published its own (a warp barrier). The slots stay
// valid until the lane's next publish: barriers alternate between two
// sets, and a set is reused only after every lane has left the barrier
// before, so one barrier an exchange suffices.
Slots publish(uint64_t v);

// exchange publishes v and returns lane src's value (v itself when src is
// not a live lane of the warp).
template <class T>
EMU_SCHED T exchange(T v, int src) {
  static_assert(sizeof(T) <= 8, "exchange of more than 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  const Slots s = publish(u);
  T r = v;
  if (src >= 0 && src < 32 && (s.lanes >> src & 1)) std::memcpy(&r, &s.v[src], sizeof(T));
  return r;
}

}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::syncthreads(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int laneMask) {
  return emu::exchange(v, (int)(emu::lane() ^ (unsigned)laneMask));
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
  const int src = (int)emu::lane() - (int)delta;
  return emu::exchange(v, src < 0 ? (int)emu::lane() : src);
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta) {
  const int src = (int)(emu::lane() + delta);
  return emu::exchange(v, src > 31 ? (int)emu::lane() : src);
}
template <class T>
inline T __shfl_sync(unsigned, T v, int srcLane) {
  return emu::exchange(v, srcLane & 31);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  const emu::Slots s = emu::publish(pred != 0);
  unsigned r = 0;
  for (int l = 0; l < 32; l++)
    if ((s.lanes >> l & 1) && s.v[l]) r |= 1u << l;
  return r & mask;
}

inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }

// Fibers never run at the same time: a plain read-modify-write is atomic.
template <class T>
inline T atomicAdd(T *p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
