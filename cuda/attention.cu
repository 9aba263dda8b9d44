// attention.cu: causal grouped-query attention over a float32 KV cache.
//
// at_attention: grid (nHeads, rows), block AT_ATT_WARPS*32 (256). Query row
//   r (position pos0 + r) of head h attends to cache positions 0..pos0+r of
//   kv head h / (nHeads / nKVHeads). Each warp takes every AT_ATT_WARPS-th
//   position with its own online softmax (running max m, sum l, and the
//   weighted V sum with lane d holding dims d, d+32, ...: headDim <= 256);
//   the warps then merge through static shared memory (8 x 256 floats).
//   Cache layout: position t of kv head g at (t * nKVHeads + g) * headDim.
//   Flash-decoding split for long contexts: grid (nHeads, rows, splits); with
//   splits > 1 block z takes positions [z*chunk, (z+1)*chunk) and writes its
//   running max, sum and unnormalized V sum to part (headDim + 2 floats a
//   (row, head, split)) instead of out; at_attention_combine merges them.
// at_attention_combine: grid (nHeads, rows), block 256: out = sum over
//   splits of e^(m_s - M) acc_s / sum of e^(m_s - M) l_s, M the largest m_s
//   (splits that saw no position have l_s = 0 and are skipped).
// posv, when not null, holds pos0 in device memory (CUDA-graph steps); the
//   split then covers the cache's capacity, and blocks past the last
//   position only write an empty partial.
#include "common.cuh"

#define AT_ATT_WARPS 8
#define AT_ATT_MAXD 256

extern "C" __global__ void __launch_bounds__(AT_ATT_WARPS * 32)
    at_attention(float *out, const float *q, const float *kc, const float *vc, int nHeads, int nKVHeads,
                 int headDim, int pos0, int chunk, float *part, const int *posv) {
  __shared__ float qs[AT_ATT_MAXD];
  __shared__ float accs[AT_ATT_WARPS][AT_ATT_MAXD];
  __shared__ float ms[AT_ATT_WARPS], ls[AT_ATT_WARPS];
  const int h = blockIdx.x, r = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = h / (nHeads / nKVHeads);
  const int kvDim = nKVHeads * headDim;
  const int n = (posv ? *posv : pos0) + r + 1;
  const int splits = gridDim.z;
  const int lo = splits > 1 ? blockIdx.z * chunk : 0, hi = splits > 1 ? min(n, lo + chunk) : n;
  const float scale = rsqrtf((float)headDim);
  const float *qr = q + ((size_t)r * nHeads + h) * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) qs[d] = qr[d];
  __syncthreads();
  const int per = (headDim + 31) / 32;
  float acc[AT_ATT_MAXD / 32];
#pragma unroll
  for (int i = 0; i < AT_ATT_MAXD / 32; i++) acc[i] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int t = lo + warp; t < hi; t += AT_ATT_WARPS) {
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
  if (splits > 1) {  // a partial: M, L, then the unnormalized sum
    float *pr = part + (((size_t)r * nHeads + h) * splits + blockIdx.z) * (headDim + 2);
    if (threadIdx.x == 0) pr[0] = M, pr[1] = L;
    for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
      float o = 0.f;
      for (int w = 0; w < AT_ATT_WARPS; w++)
        if (ls[w] > 0.f) o += accs[w][d] * __expf(ms[w] - M);
      pr[2 + d] = o;
    }
    return;
  }
  float *orow = out + ((size_t)r * nHeads + h) * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < AT_ATT_WARPS; w++)
      if (ls[w] > 0.f) o += accs[w][d] * __expf(ms[w] - M);
    orow[d] = o / L;
  }
}

extern "C" __global__ void at_attention_combine(float *out, const float *part, int nHeads, int headDim, int splits) {
  const int h = blockIdx.x, r = blockIdx.y;
  const float *pr = part + ((size_t)r * nHeads + h) * splits * (headDim + 2);
  float M = -INFINITY;
  for (int s = 0; s < splits; s++)
    if (pr[s * (headDim + 2) + 1] > 0.f) M = fmaxf(M, pr[s * (headDim + 2)]);
  float L = 0.f;
  for (int s = 0; s < splits; s++) {
    const float *ps = pr + s * (headDim + 2);
    if (ps[1] > 0.f) L += ps[1] * __expf(ps[0] - M);
  }
  float *orow = out + ((size_t)r * nHeads + h) * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < splits; s++) {
      const float *ps = pr + s * (headDim + 2);
      if (ps[1] > 0.f) o += ps[2 + d] * __expf(ps[0] - M);
    }
    orow[d] = o / L;
  }
}
