// norm.cu: RMSNorm, dst[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w.
//
// Layout: grid (rows), block AT_NORM_THREADS (256); one block per row, a
// strided sum of squares reduced through 32 floats of static shared
// memory, then a second strided pass writes the row. dst may alias x.
// zg (zg.n = 0: none) is the group of projections that reads dst next in
// threshold mode: block r also zeroes row r of each of their outputs that
// does not accumulate, the job of an at_zero launch before their gather.
// The outputs must not overlap dst or x.
#include "common.cuh"

extern "C" __global__ void at_rmsnorm(float *dst, const float *x, const float *w, int n, float eps, at_group zg) {
  __shared__ float scratch[32];
  const float *xr = x + (size_t)blockIdx.x * n;
  float *dr = dst + (size_t)blockIdx.x * n;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  ss = at_block_sum(ss, scratch);
  const float scale = 1.f / sqrtf(ss / (float)n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) dr[i] = w[i] * (scale * xr[i]);
  for (int p = 0; p < zg.n; p++) {
    const at_proj pr = at_proj_of(zg, p);
    if (pr.accum) continue;
    float *y = pr.y + (size_t)blockIdx.x * pr.out;
    for (int i = threadIdx.x; i < pr.out; i += blockDim.x) y[i] = 0.f;
  }
}
