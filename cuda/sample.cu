// sample.cu: picking the next token on the device.
//
// at_pick: grid (rows), block 1024, static shared memory (about 4 KB).
//   Block r picks from row r of logits (n values at r*n) into result[r],
//   with params[2r] = 1/temperature and params[2r+1] = u:
//   - 1/temperature 0: the index of the largest logit, the lowest index
//     on ties (as sample.Greedy): pick_argmax;
//   - else inverse-CDF sampling from softmax(logits / temperature) at u,
//     uniform in [0, 1) drawn on the host: each thread owns a contiguous
//     chunk, chunk sums are scanned in shared memory and the thread whose
//     chunk holds u * total walks it; the last index on rounding
//     (pick_sample).
#include "common.cuh"

#define AT_SAMPLE_THREADS 1024

__device__ void pick_argmax(int *result, const float *logits, int n) {
  __shared__ float sv[32];
  __shared__ int si[32];
  float best = -INFINITY;
  int bi = n;  // none yet
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (logits[i] > best || bi == n) best = logits[i], bi = i;
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(AT_FULL, best, o);
    const int i = __shfl_xor_sync(AT_FULL, bi, o);
    if (v > best || (v == best && i < bi)) best = v, bi = i;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sv[warp] = best, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    best = lane < (int)(blockDim.x >> 5) ? sv[lane] : -INFINITY;
    bi = lane < (int)(blockDim.x >> 5) ? si[lane] : n;
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(AT_FULL, best, o);
      const int i = __shfl_xor_sync(AT_FULL, bi, o);
      if (v > best || (v == best && i < bi)) best = v, bi = i;
    }
    if (lane == 0) *result = bi < n ? bi : 0;
  }
}

__device__ void pick_sample(int *result, const float *logits, int n, float invTemp, float u) {
  __shared__ float scratch[32];
  __shared__ float prefix[AT_SAMPLE_THREADS + 1];
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, logits[i]);
  mx = at_block_max(mx, scratch);
  const int chunk = (n + blockDim.x - 1) / blockDim.x;
  const int lo = min(n, (int)threadIdx.x * chunk), hi = min(n, lo + chunk);
  float own = 0.f;
  for (int i = lo; i < hi; i++) own += expf((logits[i] - mx) * invTemp);
  prefix[threadIdx.x + 1] = own;
  if (threadIdx.x == 0) {
    prefix[0] = 0.f;
    *result = n - 1;
  }
  __syncthreads();
  if (threadIdx.x == 0)  // 1024 adds: cheaper than a second kernel
    for (int i = 1; i <= (int)blockDim.x; i++) prefix[i] += prefix[i - 1];
  __syncthreads();
  const float target = u * prefix[blockDim.x];
  if (lo < hi && target >= prefix[threadIdx.x] && target < prefix[threadIdx.x + 1]) {
    float c = prefix[threadIdx.x];
    for (int i = lo; i < hi; i++) {
      c += expf((logits[i] - mx) * invTemp);
      if (target < c) {
        *result = i;
        return;
      }
    }
    *result = hi - 1;
  }
}

extern "C" __global__ void __launch_bounds__(AT_SAMPLE_THREADS)
    at_pick(int *result, const float *logits, int n, const float *params) {
  const size_t r = blockIdx.x;
  const float invTemp = params[2 * r];  // the same for the whole block: no divergent barrier
  if (invTemp == 0.f)
    pick_argmax(result + r, logits + r * n, n);
  else
    pick_sample(result + r, logits + r * n, n, invTemp, params[2 * r + 1]);
}
