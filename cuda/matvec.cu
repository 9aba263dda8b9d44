// matvec.cu: dense projections y[r] = W x[r], W (out, in) row-major in its
// dtype, x and y float32, fp32 accumulation.
//
// at_gemv_{f32,f16,bf16,q8}: decode and small batches (rows <= AT_GEMV_ROWS),
//   for a group of up to 3 projections sharing x (q/k/v, gate/up: one
//   launch). grid (sum over the group of ceil(out/8)), block 256: one warp
//   per output row o, blocks taken projection after projection; the warp
//   streams row o of W once and dots it with every x[r] (x stays in L1).
//   A projection with accum set adds to y instead of writing it.
//   vec = 1: 16-byte loads (needs in % 8 == 0 for 16-bit dtypes, in % 4 == 0
//   for f32; the host checks); vec = 0: one element a lane at a time (odd
//   sizes). Q8_0: a lane takes one 32-value block at a time.
// at_gemm_{f32,q8}: prefill. Tiled, 64 rows x 64 outputs a block,
//   k-steps of 16 through 2 x 16x64 float tiles of static shared memory,
//   block 256 = 16x16 threads each owning 4x4 outputs. trans = 1 reads
//   the weight input-channel-major, (in, out), as UploadSparse stores it.
//   accum = 1 adds to y (a residual add fused in) instead of writing it.
// at_gemm_{f16,bf16}: prefill on tensor cores (WMMA, TF32 inputs, fp32
//   accumulation; sm_80 and up). Same grid, block and arguments as the
//   SIMT GEMM: 64 rows x 64 outputs a block, k-steps of 32; 8 warps, each
//   owning a 16x32 piece (two 16x16 accumulators). Static shared memory:
//   x tile 64x(32+4), weight tile 64x(32+4) (output-major, k contiguous),
//   output staging 64x(64+4) floats, 35 KiB. The weights convert to TF32
//   exactly (fp16 and bf16 fit its 10-bit mantissa); x is rounded to TF32,
//   a relative error of at most 2^-11 a product.
#include <mma.h>

#include "common.cuh"

#define AT_GEMV_ROWS 8

template <int DT>
__device__ __forceinline__ void gemv(const at_group &g, const float *x, int rows, int in, int vec) {
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  int p = 0, blk = blockIdx.x;
  for (; p < g.n - 1; p++) {
    const int blocks = (at_proj_of(g, p).out + warps - 1) / warps;
    if (blk < blocks) break;
    blk -= blocks;
  }
  const at_proj pr = at_proj_of(g, p);
  float *y = pr.y;
  const void *W = pr.w;
  const int out = pr.out;
  const int o = blk * warps + (threadIdx.x >> 5);
  if (o >= out) return;
  float acc[AT_GEMV_ROWS];
#pragma unroll
  for (int r = 0; r < AT_GEMV_ROWS; r++) acc[r] = 0.f;
  const size_t row = (size_t)o * in;
  if (DT == AT_Q8_0) {
    const uint8_t *base = (const uint8_t *)W + row / AT_Q8_BLOCK * AT_Q8_BYTES;
    for (int b = lane; b < in / AT_Q8_BLOCK; b += 32) {
      const uint8_t *blk = base + (size_t)b * AT_Q8_BYTES;
      const float scale = at_f16(*(const uint16_t *)blk);
      float w[AT_Q8_BLOCK];
#pragma unroll
      for (int k = 0; k < AT_Q8_BLOCK / 2; k++) {
        const uint16_t two = *(const uint16_t *)(blk + 2 + 2 * k);
        w[2 * k] = (float)(int8_t)(two & 0xff);
        w[2 * k + 1] = (float)(int8_t)(two >> 8);
      }
#pragma unroll
      for (int r = 0; r < AT_GEMV_ROWS; r++) {
        if (r >= rows) break;
        const float *xr = x + (size_t)r * in + b * AT_Q8_BLOCK;
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < AT_Q8_BLOCK; k++) s += w[k] * xr[k];
        acc[r] += scale * s;
      }
    }
  } else if (vec) {
    const int V = at_vec<DT>::n;
#pragma unroll 4
    for (int i = lane * V; i < in; i += 32 * V) {
      float w[at_vec<DT>::n];
      at_ld16<DT>(W, row + i, w);
#pragma unroll
      for (int r = 0; r < AT_GEMV_ROWS; r++) {
        if (r >= rows) break;
        const float4 *xr = (const float4 *)(x + (size_t)r * in + i);
#pragma unroll
        for (int k = 0; k < V / 4; k++) {
          const float4 xv = xr[k];
          acc[r] += w[4 * k] * xv.x + w[4 * k + 1] * xv.y + w[4 * k + 2] * xv.z + w[4 * k + 3] * xv.w;
        }
      }
    }
  } else {
    for (int i = lane; i < in; i += 32) {
      const float w = at_ld<DT>(W, row + i);
#pragma unroll
      for (int r = 0; r < AT_GEMV_ROWS; r++) {
        if (r >= rows) break;
        acc[r] += w * x[(size_t)r * in + i];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < AT_GEMV_ROWS; r++) {
    if (r >= rows) break;
    const float s = at_warp_sum(acc[r]);
    if (lane == 0) y[(size_t)r * out + o] = pr.accum ? y[(size_t)r * out + o] + s : s;
  }
}

#define AT_TILE 64
#define AT_TK 16

// load_tiles loads k-step k0 of a GEMM block's two operands into shared
// memory as float, zero past the edges: rows r0.. of x and outputs o0.. of
// W, AT_TILE x TK each. Element (m, k), row or output m and input k0 + k,
// goes to tile[k][m] when KMAJOR (the SIMT GEMM) and to tile[m][k] otherwise
// (the tensor-core GEMM). W is (out, in), or (in, out) with trans.
template <int DT, int TK, bool KMAJOR, int LD>
__device__ __forceinline__ void load_tiles(float (*xs)[LD], float (*ws)[LD], const void *W, const float *x, int rows,
                                           int out, int in, int trans, int r0, int o0, int k0) {
  for (int e = threadIdx.x; e < AT_TILE * TK; e += blockDim.x) {
    const int m = e / TK, k = e % TK;  // consecutive threads walk k: x rows are contiguous in k
    const int r = r0 + m, kk = k0 + k;
    (KMAJOR ? xs[k][m] : xs[m][k]) = (r < rows && kk < in) ? x[(size_t)r * in + kk] : 0.f;
    float w = 0.f;
    if (trans) {
      const int k2 = e / AT_TILE, o2 = e % AT_TILE;  // (in, out): contiguous in o
      const int oo = o0 + o2, kk2 = k0 + k2;
      if (oo < out && kk2 < in) w = at_ld<DT>(W, (size_t)kk2 * out + oo);
      (KMAJOR ? ws[k2][o2] : ws[o2][k2]) = w;
    } else {
      const int oo = o0 + m;
      if (oo < out && kk < in) w = at_ld<DT>(W, (size_t)oo * in + kk);
      (KMAJOR ? ws[k][m] : ws[m][k]) = w;
    }
  }
}

template <int DT>
__device__ __forceinline__ void gemm(float *y, const void *W, const float *x, int rows, int out, int in, int trans,
                                     int accum) {
  __shared__ float xs[AT_TK][AT_TILE + 4];
  __shared__ float ws[AT_TK][AT_TILE + 4];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int r0 = blockIdx.y * AT_TILE, o0 = blockIdx.x * AT_TILE;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < in; k0 += AT_TK) {
    load_tiles<DT, AT_TK, true>(xs, ws, W, x, rows, out, in, trans, r0, o0, k0);  // 4 values a thread each
    __syncthreads();
#pragma unroll
    for (int k = 0; k < AT_TK; k++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        a[i] = xs[k][ty + 16 * i];
        b[i] = ws[k][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int r = r0 + ty + 16 * i;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int o = o0 + tx + 16 * j;
      if (o < out) y[(size_t)r * out + o] = accum ? y[(size_t)r * out + o] + acc[i][j] : acc[i][j];
    }
  }
}

#define AT_TC_K 32
#define AT_TC_PAD 4

template <int DT>
__device__ __forceinline__ void gemm_tc(float *y, const void *W, const float *x, int rows, int out, int in,
                                        int trans, int accum) {
  using namespace nvcuda;
  __shared__ __align__(32) float xs[AT_TILE][AT_TC_K + AT_TC_PAD];  // [row][k]
  __shared__ __align__(32) float ws[AT_TILE][AT_TC_K + AT_TC_PAD];  // [output][k]
  __shared__ __align__(32) float cs[AT_TILE][AT_TILE + AT_TC_PAD];  // [row][output]
  const int warp = threadIdx.x >> 5;
  const int wm = warp & 3, wn = warp >> 2;  // rows 16*wm.., outputs 32*wn..
  const int r0 = blockIdx.y * AT_TILE, o0 = blockIdx.x * AT_TILE;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
  for (int k0 = 0; k0 < in; k0 += AT_TC_K) {
    load_tiles<DT, AT_TC_K, false>(xs, ws, W, x, rows, out, in, trans, r0, o0, k0);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < AT_TC_K; k += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
      wmma::load_matrix_sync(a, &xs[16 * wm][k], AT_TC_K + AT_TC_PAD);
#pragma unroll
      for (int i = 0; i < a.num_elements; i++) a.x[i] = wmma::__float_to_tf32(a.x[i]);
#pragma unroll
      for (int j = 0; j < 2; j++) {
        // B (k x outputs) is ws read column-major: element (k, n) at ws[n][k].
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> b;
        wmma::load_matrix_sync(b, &ws[32 * wn + 16 * j][k], AT_TC_K + AT_TC_PAD);
#pragma unroll
        for (int i = 0; i < b.num_elements; i++) b.x[i] = wmma::__float_to_tf32(b.x[i]);
        wmma::mma_sync(acc[j], a, b, acc[j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < 2; j++)
    wmma::store_matrix_sync(&cs[16 * wm][32 * wn + 16 * j], acc[j], AT_TILE + AT_TC_PAD, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < AT_TILE * AT_TILE; e += blockDim.x) {
    const int m = e / AT_TILE, n = e % AT_TILE;
    const int r = r0 + m, o = o0 + n;
    if (r < rows && o < out) y[(size_t)r * out + o] = accum ? y[(size_t)r * out + o] + cs[m][n] : cs[m][n];
  }
}

#define AT_GEMV(suffix, DT)                                                                                      \
  extern "C" __global__ void __launch_bounds__(256) at_gemv_##suffix(const float *x, int rows, int in, int vec, \
                                                                     at_group g) {                              \
    gemv<DT>(g, x, rows, in, vec);                                                                               \
  }
#define AT_GEMM(suffix, DT, impl)                                                                                \
  extern "C" __global__ void __launch_bounds__(256) at_gemm_##suffix(                                           \
      float *y, const void *W, const float *x, int rows, int out, int in, int trans, int accum) {                \
    impl<DT>(y, W, x, rows, out, in, trans, accum);                                                              \
  }

AT_GEMV(f32, AT_F32)
AT_GEMV(f16, AT_F16)
AT_GEMV(bf16, AT_BF16)
AT_GEMV(q8, AT_Q8_0)
AT_GEMM(f32, AT_F32, gemm)
AT_GEMM(q8, AT_Q8_0, gemm)
AT_GEMM(f16, AT_F16, gemm_tc)
AT_GEMM(bf16, AT_BF16, gemm_tc)
