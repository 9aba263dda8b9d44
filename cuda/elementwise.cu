// elementwise.cu: RoPE, SwiGLU, residual add and embedding lookup.
//
// at_rope: grid (ceil(heads*headDim/2 / 256), rows), block 256; one thread a
//   pair (2i, 2i+1) of one head, angle (pos0 + r) * freqs[i] in double so
//   that long contexts keep the CPU reference's precision.
// at_rope_cache: grid (ceil(W/256), rows), block 256, W = heads*hd/2 +
//   kvHeads*hd/2 + kvHeads*hd: one thread a q pair (rotated in place), a k
//   pair (rotated in place and into kc at row pos0 + r) or a v value (into
//   vc at row pos0 + r): RoPE on q and k and the cache append in one launch.
//   posv, when not null, holds pos0 in device memory (a CUDA-graph step
//   reads its positions there, so that the graph stays the same).
// at_swiglu, at_add: grid-stride over n, block 256, grid from the host.
// at_zero: zeroes rows x out_p values of every projection of a group (the
//   outputs a gather accumulates into) but those with accum set: one launch
//   instead of a memset each; grid-stride, block 256.
// at_embed: grid (ceil(dim/256), rows), block 256; table row tokens[r] of
//   any weight dtype (Q8_0 rows are whole blocks since dim % 32 == 0).
//   tokens = null: the ids are inline.t[r] (rows <= AT_INLINE_TOKENS), passed
//   by value so that a decode step needs no host-to-device copy (and can
//   be captured in a CUDA graph).
#include "common.cuh"

extern "C" __global__ void at_rope(float *x, const float *freqs, int rows, int heads, int headDim, int pos0) {
  const int half = headDim / 2;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  const int r = blockIdx.y;
  if (p >= heads * half || r >= rows) return;
  const int h = p / half, i = p % half;
  double s, c;
  sincos((double)(pos0 + r) * (double)freqs[i], &s, &c);
  const float cf = (float)c, sf = (float)s;
  float *v = x + ((size_t)r * heads + h) * headDim + 2 * i;
  const float a = v[0], b = v[1];
  v[0] = a * cf - b * sf;
  v[1] = a * sf + b * cf;
}

// rotate turns the pair at v by angle pos * freq (in double, as at_rope).
__device__ __forceinline__ void at_rotate(float *v, int pos, float freq, float *copy) {
  double sn, cs;
  sincos((double)pos * (double)freq, &sn, &cs);
  const float cf = (float)cs, sf = (float)sn;
  const float a = v[0], b = v[1];
  const float x0 = a * cf - b * sf, x1 = a * sf + b * cf;
  v[0] = x0;
  v[1] = x1;
  if (copy) copy[0] = x0, copy[1] = x1;
}

extern "C" __global__ void at_rope_cache(float *q, float *k, const float *v, float *kc, float *vc,
                                         const float *freqs, int heads, int kvHeads, int headDim, int pos0,
                                         const int *posv) {
  const int half = headDim / 2, kvDim = kvHeads * headDim;
  const int r = blockIdx.y, pos = (posv ? *posv : pos0) + r;
  int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p < heads * half) {
    at_rotate(q + ((size_t)r * heads + p / half) * headDim + 2 * (p % half), pos, freqs[p % half], nullptr);
    return;
  }
  p -= heads * half;
  if (p < kvHeads * half) {
    const size_t at = (size_t)(p / half) * headDim + 2 * (p % half);
    at_rotate(k + (size_t)r * kvDim + at, pos, freqs[p % half], kc + (size_t)pos * kvDim + at);
    return;
  }
  p -= kvHeads * half;
  if (p < kvDim) vc[(size_t)pos * kvDim + p] = v[(size_t)r * kvDim + p];
}

extern "C" __global__ void at_swiglu(float *gate, const float *up, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    gate[i] = at_swiglu_of(gate[i], up[i]);
  }
}

extern "C" __global__ void at_zero(at_group g, int rows) {
  for (int p = 0; p < g.n; p++) {
    const at_proj pr = at_proj_of(g, p);
    if (pr.accum) continue;  // the gather adds to y as it is
    const long long n = (long long)rows * pr.out;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
      pr.y[i] = 0.f;
  }
}

extern "C" __global__ void at_add(float *dst, const float *x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dst[i] += x[i];
}

#define AT_INLINE_TOKENS 8
struct at_tokens {
  int t[AT_INLINE_TOKENS];
};
static_assert(sizeof(at_tokens) == 32, "at_tokens layout");

extern "C" __global__ void at_embed(float *dst, const void *table, const int *tokens, int dim, int dtype,
                                   at_tokens inl) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  const size_t r = blockIdx.y;
  const int tok = tokens ? tokens[r] : inl.t[r];
  dst[r * dim + j] = at_ld_any(table, (size_t)tok * dim + j, dtype);
}
