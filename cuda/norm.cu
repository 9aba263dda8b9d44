// norm.cu: RMSNorm, dst[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w.
//
// Layout: grid (rows), block AT_NORM_THREADS (256); one block per row, a
// strided sum of squares reduced through 32 floats of static shared
// memory, then a second strided pass writes the row. dst may alias x.
#include "common.cuh"

extern "C" __global__ void at_rmsnorm(float *dst, const float *x, const float *w, int n, float eps) {
  __shared__ float scratch[32];
  const float *xr = x + (size_t)blockIdx.x * n;
  float *dr = dst + (size_t)blockIdx.x * n;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  ss = at_block_sum(ss, scratch);
  const float scale = 1.f / sqrtf(ss / (float)n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) dr[i] = w[i] * (scale * xr[i]);
}
