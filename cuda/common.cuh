// common.cuh: dtype codes, element loads and block reductions shared by
// every kernel. Activations are float32; weights are F32, F16, BF16 or
// Q8_0 (GGML blocks of 32: an f16 scale, then 32 int8), row-major.
#pragma once

#include <cuda_fp16.h>
#include <stddef.h>
#include <stdint.h>

// Dtype codes: the order of model.DType in the Go runtime.
#define AT_F32 0
#define AT_F16 1
#define AT_BF16 2
#define AT_Q8_0 3

#define AT_Q8_BLOCK 32
#define AT_Q8_BYTES 34

// at_proj is one projection of a fused group (q/k/v or gate/up: up to
// AT_GROUP sharing one input); at_group is passed by value in the kernel
// parameters. The host packs it byte by byte (runtime/backend/cuda,
// packGroup): every field naturally aligned, at_proj 32 bytes, at_group 104.
#define AT_GROUP 3
struct at_proj {
  float *y;        // out values a token
  const void *w;   // weights: (out, in) for at_gemv, (in, out) for at_gather
  int out;
  int slot;        // c_sites slot (at_select)
  int stat;        // stats counter (at_select); < 0: not counted
  int accum;       // 1: y += W x (a residual add fused in); 0: y = W x
};
struct at_group {
  at_proj p[AT_GROUP];
  int n;  // projections in use
};
// at_proj_of is projection p of g, chosen by branches rather than by an
// index, which would copy the parameter struct to local memory.
__device__ __forceinline__ at_proj at_proj_of(const at_group &g, int p) {
  return p == 0 ? g.p[0] : p == 1 ? g.p[1] : g.p[2];
}
// The layout the host packs; a change here must change packGroup too.
static_assert(sizeof(at_proj) == 32 && offsetof(at_proj, out) == 16 && offsetof(at_proj, stat) == 24 &&
                  offsetof(at_proj, accum) == 28,
              "at_proj layout");
static_assert(sizeof(at_group) == 104 && offsetof(at_group, n) == 96, "at_group layout");

// AT_FULL is the mask of a whole warp.
#define AT_FULL 0xffffffffu

__device__ __forceinline__ float at_bf16(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ float at_f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// at_swiglu_of is SwiGLU's value for gate g and up u: silu(g) * u. One
// expression for at_swiglu and for at_select's fused form, so both round
// alike.
__device__ __forceinline__ float at_swiglu_of(float g, float u) { return g / (1.f + expf(-g)) * u; }

// at_ld returns element i of a row-major tensor of dtype DT as float.
template <int DT>
__device__ __forceinline__ float at_ld(const void *p, size_t i);
template <>
__device__ __forceinline__ float at_ld<AT_F32>(const void *p, size_t i) { return ((const float *)p)[i]; }
template <>
__device__ __forceinline__ float at_ld<AT_F16>(const void *p, size_t i) { return at_f16(((const uint16_t *)p)[i]); }
template <>
__device__ __forceinline__ float at_ld<AT_BF16>(const void *p, size_t i) { return at_bf16(((const uint16_t *)p)[i]); }
template <>
__device__ __forceinline__ float at_ld<AT_Q8_0>(const void *p, size_t i) {
  const uint8_t *b = (const uint8_t *)p + (i / AT_Q8_BLOCK) * AT_Q8_BYTES;
  return at_f16(*(const uint16_t *)b) * (float)(int8_t)b[2 + i % AT_Q8_BLOCK];
}

// at_ld_any dispatches on a run-time dtype (for small kernels).
__device__ __forceinline__ float at_ld_any(const void *p, size_t i, int dt) {
  switch (dt) {
    case AT_F16: return at_ld<AT_F16>(p, i);
    case AT_BF16: return at_ld<AT_BF16>(p, i);
    case AT_Q8_0: return at_ld<AT_Q8_0>(p, i);
    default: return at_ld<AT_F32>(p, i);
  }
}

// AT_VEC<DT> is the elements in one 16-byte load.
template <int DT>
struct at_vec {
  static const int n = DT == AT_F32 ? 4 : 8;
};

// at_ld16 loads the at_vec<DT>::n elements at i (16-byte aligned) into v.
template <int DT>
__device__ __forceinline__ void at_ld16(const void *p, size_t i, float *v) {
  const uint4 u = *(const uint4 *)((const char *)p + i * (DT == AT_F32 ? 4 : 2));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; k++) {
    if (DT == AT_F32) {
      v[k] = __uint_as_float(w[k]);
    } else if (DT == AT_BF16) {
      v[2 * k] = __uint_as_float(w[k] << 16);
      v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    } else {
      v[2 * k] = at_f16((uint16_t)(w[k] & 0xffff));
      v[2 * k + 1] = at_f16((uint16_t)(w[k] >> 16));
    }
  }
}

__device__ __forceinline__ float at_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(AT_FULL, v, o);
  return v;
}

__device__ __forceinline__ float at_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(AT_FULL, v, o));
  return v;
}

// at_block_sum returns the sum of v over the block (blockDim.x a multiple
// of 32, at most 1024) to every thread. scratch: 32 floats of shared memory.
__device__ __forceinline__ float at_block_sum(float v, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = at_warp_sum(v);
  __syncthreads();  // scratch may hold a previous call's values
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : 0.f;
  return at_warp_sum(v);
}

__device__ __forceinline__ float at_block_max(float v, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = at_warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : -INFINITY;
  return at_warp_max(v);
}

// at_block_scan returns the exclusive prefix sum of v over the block and
// the block total in *total. scratch: 33 ints of shared memory.
__device__ __forceinline__ int at_block_scan(int v, int *scratch, int *total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    int t = __shfl_up_sync(AT_FULL, inc, o);
    if (lane >= o) inc += t;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    int w = lane < nw ? scratch[lane] : 0, winc = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      int t = __shfl_up_sync(AT_FULL, winc, o);
      if (lane >= o) winc += t;
    }
    scratch[lane] = winc - w;  // exclusive prefix of warp totals
    if (lane == 31) scratch[32] = winc;
  }
  __syncthreads();
  *total = scratch[32];
  return scratch[warp] + inc - v;
}
