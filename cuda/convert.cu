// convert.cu: the transposed upload for sparse projections, and the
// narrowing of activations for cuBLAS.
//
// at_transpose: src (out, in) row-major of dtype dt -> dst (in, out), same
//   dtype for F32/F16/BF16 (exact), F32 for Q8_0 (dequantized, exact).
//   grid (ceil(in/32), ceil(out/32)), block (32, 8); a 32x33 float tile in
//   static shared memory keeps both the read and the write coalesced.
// at_narrow: dst[i] = src[i] as F16 (round to nearest, saturated at
//   +-65504 rather than infinite) or BF16 (round to nearest even), NaN
//   kept, for i < n: the activations of a cuBLAS GEMM whose weights are
//   F16 or BF16 (cuBLAS multiplies two inputs of one type). Grid-stride
//   loop, block 256.
#include "common.cuh"

extern "C" __global__ void at_transpose(void *dst, const void *src, int out, int in, int dt) {
  __shared__ float tile[32][33];
  const int i0 = blockIdx.x * 32, o0 = blockIdx.y * 32;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int o = o0 + k, i = i0 + threadIdx.x;
    if (o < out && i < in) tile[k][threadIdx.x] = at_ld_any(src, (size_t)o * in + i, dt);
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int i = i0 + k, o = o0 + threadIdx.x;
    if (o >= out || i >= in) continue;
    const float v = tile[threadIdx.x][k];
    const size_t at = (size_t)i * out + o;
    switch (dt) {
      case AT_F16: ((uint16_t *)dst)[at] = __half_as_ushort(__float2half_rn(v)); break;
      case AT_BF16: ((uint16_t *)dst)[at] = (uint16_t)(__float_as_uint(v) >> 16); break;
      default: ((float *)dst)[at] = v; break;
    }
  }
}

extern "C" __global__ void at_narrow(uint16_t *dst, const float *src, long long n, int dt) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = src[i];
    const uint32_t u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a (quiet) NaN
      dst[i] = dt == AT_F16 ? (uint16_t)0x7e00u : (uint16_t)(u >> 16 | 0x40u);
    } else if (dt == AT_F16) {
      dst[i] = __half_as_ushort(__float2half_rn(fminf(fmaxf(v, -65504.f), 65504.f)));
    } else {
      dst[i] = (uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
    }
  }
}
