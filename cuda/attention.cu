// attention.cu: causal grouped-query attention over a float32 KV cache.
//
// at_attention: grid (nHeads, rows), block AT_ATT_WARPS*32 (256). Query row
//   r (position pos0 + r) of head h attends to cache positions 0..pos0+r of
//   kv head h / (nHeads / nKVHeads). Each warp takes every AT_ATT_WARPS-th
//   position with its own online softmax (running max m, sum l, and the
//   weighted V sum with lane d holding dims d, d+32, ...: headDim <= 256);
//   the warps then merge through static shared memory (8 x 256 floats).
//   Cache layout: position t of kv head g at (t * nKVHeads + g) * headDim.
#include "common.cuh"

#define AT_ATT_WARPS 8
#define AT_ATT_MAXD 256

extern "C" __global__ void __launch_bounds__(AT_ATT_WARPS * 32)
    at_attention(float *out, const float *q, const float *kc, const float *vc, int nHeads, int nKVHeads,
                 int headDim, int pos0) {
  __shared__ float qs[AT_ATT_MAXD];
  __shared__ float accs[AT_ATT_WARPS][AT_ATT_MAXD];
  __shared__ float ms[AT_ATT_WARPS], ls[AT_ATT_WARPS];
  const int h = blockIdx.x, r = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = h / (nHeads / nKVHeads);
  const int kvDim = nKVHeads * headDim;
  const int n = pos0 + r + 1;
  const float scale = rsqrtf((float)headDim);
  const float *qr = q + ((size_t)r * nHeads + h) * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) qs[d] = qr[d];
  __syncthreads();
  const int per = (headDim + 31) / 32;
  float acc[AT_ATT_MAXD / 32];
#pragma unroll
  for (int i = 0; i < AT_ATT_MAXD / 32; i++) acc[i] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int t = warp; t < n; t += AT_ATT_WARPS) {
    const float *kr = kc + (size_t)t * kvDim + (size_t)g * headDim;
    float s = 0.f;
    for (int d = lane; d < headDim; d += 32) s += qs[d] * kr[d];
    s = at_warp_sum(s) * scale;
    const float mn = fmaxf(m, s);
    const float corr = __expf(m - mn), p = __expf(s - mn);
    l = l * corr + p;
    const float *vr = vc + (size_t)t * kvDim + (size_t)g * headDim;
#pragma unroll
    for (int i = 0; i < AT_ATT_MAXD / 32; i++) {
      if (i >= per) break;
      const int d = lane + 32 * i;
      acc[i] = acc[i] * corr + (d < headDim ? p * vr[d] : 0.f);
    }
    m = mn;
  }
  if (lane == 0) {
    ms[warp] = m;
    ls[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < AT_ATT_MAXD / 32; i++) {
    if (i >= per) break;
    const int d = lane + 32 * i;
    if (d < headDim) accs[warp][d] = acc[i];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < AT_ATT_WARPS; w++) M = fmaxf(M, ms[w]);
  float L = 0.f;
  for (int w = 0; w < AT_ATT_WARPS; w++)
    if (ls[w] > 0.f) L += ls[w] * __expf(ms[w] - M);
  float *orow = out + ((size_t)r * nHeads + h) * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < AT_ATT_WARPS; w++)
      if (ls[w] > 0.f) o += accs[w][d] * __expf(ms[w] - M);
    orow[d] = o / L;
  }
}
