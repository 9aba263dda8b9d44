// sparse.cu: activation masking and gather products for sparse projections.
//
// Budgets live in c_sites, one at_site per slot, packed by the host at plan
// load (cuModuleGetGlobal + copy); a kernel reads its site's budget by slot.
//
// Both kernels serve a group of up to 3 projections that share the input x
// (q/k/v with three budgets, gate/up with two; at_group in common.cuh), so
// a group costs two launches whatever its size. Scratch rows are per
// (projection p, token r): row p*rows + r of idx, count and xm.
//
// at_select: grid (rows, group size), block AT_SELECT_THREADS (1024), static
//   shared memory only (histogram 256 words + scan scratch). One block per
//   token and projection, with that projection's site (c_sites[slot]):
//   - topk (k < in): exact k-th largest |x| by a 4-pass radix select on the
//     bits of |x| (8 bits a pass, histogram in shared memory); keep |x| above
//     it and the first ties (lowest index) up to k;
//   - threshold: keep |x| > t;
//   then an order-preserving block compaction writes the kept indices in
//   increasing order to idx (null: skip) and their number to count, or the
//   masked input to xm (null: skip); with idx it also zeroes the
//   projection's y[r] for the gather to accumulate into (unless accum: then
//   the gather adds to what y holds, a residual add fused in).
//   stats[2*stat] += kept, stats[2*stat+1] += in (stat < 0: not counted).
//   With nw set (fast path only: in <= AT_SELECT_PER * 1024), x is first the
//   RMSNorm of nx: every block of token r normalizes nx[r] in registers
//   (x = nx / sqrt(mean(nx^2) + neps) * nw, as at_rmsnorm) and the block of
//   projection 0 writes it to x, where the gather reads it: the norm before
//   q/k/v and gate/up needs no launch of its own. With su set instead (fast
//   path, a group of one projection), x is first SwiGLU(x, su) in place, as
//   at_swiglu: the one block of a token reads its gate values, writes
//   silu(gate) * up back, and selects among them: SwiGLU before the down
//   projection needs no launch of its own.
// at_gather_{f32,f16,bf16}: y_p[r] += sum over j in idx[p*rows+r] of x[r][j] *
//   Wt_p[j, :], Wt_p (in, out_p) input-channel-major. grid (sum over the
//   group of ceil(out_p / (128*V)), splits, rows), block 128: a thread owns V
//   adjacent outputs (vec = 1: V = 16 bytes of weights; vec = 0: V = 1), a
//   block walks its split of the token's kept list and adds its partial
//   sums with atomicAdd (y zeroed first). idx = null means every input (a
//   dense product on the transposed layout).
#include "common.cuh"

struct at_site {
  int k;            // topk: inputs kept per token
  float threshold;  // threshold mode: keep |x| > threshold
  int topk;         // 1: topk, 0: threshold
  int reserved;
};
static_assert(sizeof(at_site) == 16, "at_site layout: packSite writes 16 bytes");

#define AT_MAX_SITES 2048
__constant__ at_site c_sites[AT_MAX_SITES];

#define AT_SELECT_THREADS 1024

__device__ __forceinline__ uint32_t at_absbits(float v) { return __float_as_uint(v) & 0x7fffffffu; }

// pick_digit: warp 0 finds, scanning the 256 bin totals from the top, the
// digit of the k-th largest remaining value and narrows the prefix to it;
// *s_all says whether that bin holds exactly the values still needed.
// Lane l owns bins 255-8l ... 248-8l.
__device__ __forceinline__ void pick_digit(const uint32_t *tot, int shift, uint32_t *s_prefix, uint32_t *s_mask,
                                           int *s_k, int *s_all) {
  const int lane = threadIdx.x;
  uint32_t own = 0;
  for (int q = 0; q < 8; q++) own += tot[255 - 8 * lane - q];
  uint32_t inc = own;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t v = __shfl_up_sync(AT_FULL, inc, o);
    if (lane >= o) inc += v;
  }
  const int kk = *s_k;
  const unsigned hit = __ballot_sync(AT_FULL, inc >= (uint32_t)kk);
  const int first = __ffs(hit) - 1;  // k <= n, so some lane reaches k
  if (lane == first) {
    uint32_t cum = inc - own;
    for (int q = 0; q < 8; q++) {
      const int bin = 255 - 8 * lane - q;
      if (cum + tot[bin] >= (uint32_t)kk) {
        *s_prefix |= (uint32_t)bin << shift;
        *s_mask |= 255u << shift;
        *s_k = kk - (int)cum;
        *s_all = cum + tot[bin] == (uint32_t)kk;  // the whole bin is kept
        break;
      }
      cum += tot[bin];
    }
  }
}

// select_kth finds, among the bits of |x|, the k-th largest value t and how
// many elements equal to t are kept (*need), so that count(> t) + need = k.
__device__ void select_kth(const float *x, int n, int k, uint32_t *hist, uint32_t *t, int *need) {
  __shared__ uint32_t s_prefix, s_mask;
  __shared__ int s_k, s_all;
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_mask = 0;
    s_k = k;
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const uint32_t prefix = s_prefix, mask = s_mask;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      const uint32_t b = at_absbits(x[j]);
      if ((b & mask) == prefix) atomicAdd(&hist[(b >> shift) & 255], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) pick_digit(hist, shift, &s_prefix, &s_mask, &s_k, &s_all);
    __syncthreads();
  }
  *t = s_prefix;
  *need = s_k;
}

// AT_SELECT_PER is the inputs a thread keeps in registers: the fast path
// of at_select takes in <= AT_SELECT_PER * 1024.
#define AT_SELECT_PER 16

// select_regs is at_select for in <= AT_SELECT_PER * blockDim.x: thread t
// holds the contiguous inputs [t*per, t*per + per) in registers, so the radix
// passes read no memory, and the compaction is one block scan. The
// histogram is one sub-histogram per lane (hist[bin][lane]): the lanes of a
// warp never add to the same word, so the atomics do not serialize when
// most inputs share a few exponents (the first pass).
__device__ __forceinline__ void select_regs(const float *xr, int in, const at_site s, bool topk, bool all,
                                            int *idxr, int *countr, float *xmr, int *keptOut, float *xw,
                                            const float *nxr, const float *nw, float neps, const float *sur) {
  __shared__ uint32_t hist[256][32];
  __shared__ uint32_t tot[256];
  __shared__ int scan[33];
  __shared__ uint32_t s_prefix, s_mask;
  __shared__ int s_k, s_all;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per = (in + blockDim.x - 1) / blockDim.x;
  const int j0 = threadIdx.x * per;
  const int nv = max(0, min(per, in - j0));
  float v[AT_SELECT_PER];
  if (nw) {  // x = RMSNorm(nx): this token's row, normalized here; written by xw's block
    __shared__ float nscratch[32];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < AT_SELECT_PER; i++) {
      v[i] = i < nv ? nxr[j0 + i] : 0.f;
      ss += v[i] * v[i];
    }
    ss = at_block_sum(ss, nscratch);
    const float scale = 1.f / sqrtf(ss / (float)in + neps);
#pragma unroll
    for (int i = 0; i < AT_SELECT_PER; i++) {
      if (i < nv) {
        v[i] = nw[j0 + i] * (scale * v[i]);
        if (xw) xw[j0 + i] = v[i];
      }
    }
  } else if (sur) {  // x = SwiGLU(x, su), in place: each thread reads and writes its own inputs
#pragma unroll
    for (int i = 0; i < AT_SELECT_PER; i++) {
      if (i < nv) {
        v[i] = at_swiglu_of(xr[j0 + i], sur[j0 + i]);
        xw[j0 + i] = v[i];
      } else {
        v[i] = 0.f;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < AT_SELECT_PER; i++) v[i] = i < nv ? xr[j0 + i] : 0.f;
  }
  uint32_t t = 0;
  int need = 0;
  if (topk) {
    if (threadIdx.x == 0) s_prefix = 0, s_mask = 0, s_k = s.k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int e = threadIdx.x; e < 256 * 32; e += blockDim.x) (&hist[0][0])[e] = 0;
      __syncthreads();
      const uint32_t prefix = s_prefix, mask = s_mask;
#pragma unroll
      for (int i = 0; i < AT_SELECT_PER; i++)
        if (i < nv && (at_absbits(v[i]) & mask) == prefix) atomicAdd(&hist[(at_absbits(v[i]) >> shift) & 255][lane], 1u);
      __syncthreads();
      if (threadIdx.x < 256) {  // thread b sums bin b, reading lane (l + b) % 32: no bank conflicts
        const int bin = threadIdx.x;
        uint32_t c = 0;
        for (int l = 0; l < 32; l++) c += hist[bin][(l + bin) & 31];
        tot[bin] = c;
      }
      __syncthreads();
      if (warp == 0) pick_digit(tot, shift, &s_prefix, &s_mask, &s_k, &s_all);
      __syncthreads();
      // Early exit: when the chosen bin holds exactly the values still
      // needed, the kept set is every |x| whose bits are >= the prefix (its
      // low bits zero): t = prefix - 1 with no ties. Usually true after the
      // third pass, when the k-th value is alone in its bin. (A zero prefix
      // would mean keeping all inputs, which top-k with k < in never does.)
      if (s_all && shift > 0 && s_prefix > 0) break;
    }
    t = s_prefix;
    need = s_k;
    if (s_all && s_prefix > 0 && (s_mask & 255u) == 0) t = s_prefix - 1, need = 0;
  }
  // Compaction: the thread's inputs are consecutive, so one scan of its
  // counts (above t, equal to t) places every kept index in order.
  int above = 0, tie = 0;
#pragma unroll
  for (int i = 0; i < AT_SELECT_PER; i++) {
    if (i >= nv) break;
    if (all) above++;
    else if (topk) above += at_absbits(v[i]) > t, tie += at_absbits(v[i]) == t;
    else above += fabsf(v[i]) > s.threshold;
  }
  int total;
  const int packed = at_block_scan(above | (tie << 16), scan, &total);
  int a = packed & 0xffff, tb = packed >> 16;
#pragma unroll
  for (int i = 0; i < AT_SELECT_PER; i++) {
    if (i >= nv) break;
    bool up, eq = false;
    if (all) up = true;
    else if (topk) up = at_absbits(v[i]) > t, eq = at_absbits(v[i]) == t;
    else up = fabsf(v[i]) > s.threshold;
    const bool keep = up || (eq && tb < need);
    if (keep && idxr) idxr[a + min(tb, need)] = j0 + i;
    if (xmr) xmr[j0 + i] = keep ? v[i] : 0.f;
    a += up;
    tb += eq;
  }
  *keptOut = (total & 0xffff) + min(total >> 16, need);
}

// select_large is at_select for longer inputs: radix passes and the
// compaction stream x from memory, blockDim inputs at a time.
__device__ __forceinline__ void select_large(const float *xr, int in, const at_site s, bool topk, bool all,
                                             int *idxr, float *xmr, int *keptOut) {
  __shared__ uint32_t hist[256];
  __shared__ int scan[33];
  uint32_t t = 0;
  int need = 0;
  if (topk) select_kth(xr, in, s.k, hist, &t, &need);
  // above = |x| > t (or kept by the threshold rule), tie = |x| == t (topk
  // only). The first need ties by index are kept.
  int kept = 0, ties = 0;
  for (int base = 0; base < in; base += blockDim.x) {
    const int j = base + threadIdx.x;
    int above = 0, tie = 0;
    float v = 0.f;
    if (j < in) {
      v = xr[j];
      const uint32_t b = at_absbits(v);
      if (all) above = 1;
      else if (topk) above = b > t, tie = b == t;
      else above = fabsf(v) > s.threshold;
    }
    int total;
    const int packed = at_block_scan(above | (tie << 16), scan, &total);
    const int aBefore = packed & 0xffff, tBefore = packed >> 16;
    const int tieRoom = max(0, need - ties);
    const bool keep = above || (tie && tBefore < tieRoom);
    if (j < in) {
      if (keep && idxr) idxr[kept + aBefore + min(tBefore, tieRoom)] = j;
      if (xmr) xmr[j] = keep ? v : 0.f;
    }
    kept += (total & 0xffff) + min(total >> 16, tieRoom);
    ties += total >> 16;
  }
  *keptOut = kept;
}

extern "C" __global__ void __launch_bounds__(AT_SELECT_THREADS)
    at_select(float *x, int in, int rows, int *idx, int *count, float *xm, unsigned long long *stats, at_group g,
              const float *nx, const float *nw, float neps, const float *su) {
  const size_t r = blockIdx.x;
  const int p = blockIdx.y;  // projection of the group
  const at_proj pr = at_proj_of(g, p);
  const size_t row = (size_t)p * rows + r;  // this (projection, token)'s scratch row
  const float *xr = x + r * in;
  const at_site s = c_sites[pr.slot];
  const bool topk = s.topk != 0 && s.k < in;
  const bool all = s.topk != 0 ? s.k >= in : !(s.threshold > 0.f);
  int *idxr = idx ? idx + row * in : nullptr;
  float *xmr = xm ? xm + row * in : nullptr;
  int kept;
  if (in <= AT_SELECT_PER * (int)blockDim.x)
    select_regs(xr, in, s, topk, all, idxr, count, xmr, &kept, (nw || su) && p == 0 ? x + r * in : nullptr,
                nx ? nx + r * in : nullptr, nw, neps, su ? su + r * in : nullptr);
  else
    select_large(xr, in, s, topk, all, idxr, xmr, &kept);
  if (threadIdx.x == 0) {
    if (count) count[row] = kept;
    if (pr.stat >= 0) {
      atomicAdd(&stats[2 * pr.stat], (unsigned long long)kept);
      atomicAdd(&stats[2 * pr.stat + 1], (unsigned long long)in);
    }
  }
  if (idx && pr.y && !pr.accum)
    for (int o = threadIdx.x; o < pr.out; o += blockDim.x) pr.y[r * pr.out + o] = 0.f;
}

#define AT_GATHER_THREADS 128

// gather_tile finds the projection (*proj) of g and its column tile (*tile)
// that block blockIdx.x covers (proj may be null): tiles of 128*V outputs, projection after projection.
__device__ __forceinline__ at_proj gather_tile(const at_group &g, int V, int *tile, int *proj) {
  int p = 0, t = blockIdx.x;
  for (; p < g.n - 1; p++) {
    const int tiles = (at_proj_of(g, p).out + AT_GATHER_THREADS * V - 1) / (AT_GATHER_THREADS * V);
    if (t < tiles) break;
    t -= tiles;
  }
  *tile = t;
  if (proj) *proj = p;
  return at_proj_of(g, p);
}

// accumulate adds to y the rows rows[lo..hi) of Wt (in, out) weighted by
// their x (rows = null: rows lo..hi themselves), for the outputs of this
// thread in column tile tile.
template <int DT>
__device__ __forceinline__ void accumulate(float *y, const void *Wt, const float *x, const int *rows, int lo, int hi,
                                           int out, int tile, int vec) {
  if (vec) {
    const int o = (tile * blockDim.x + threadIdx.x) * at_vec<DT>::n;
    if (o >= out) return;
    float acc[at_vec<DT>::n] = {};
    int j = lo;
    // Four rows in flight a thread: independent 16-byte loads.
    for (; j + 4 <= hi; j += 4) {
      int rr[4];
      float a[4], w[4][at_vec<DT>::n];
#pragma unroll
      for (int u = 0; u < 4; u++) rr[u] = rows ? rows[j + u] : j + u;
#pragma unroll
      for (int u = 0; u < 4; u++) {
        a[u] = x[rr[u]];
        at_ld16<DT>(Wt, (size_t)rr[u] * out + o, w[u]);
      }
#pragma unroll
      for (int u = 0; u < 4; u++)
#pragma unroll
        for (int v = 0; v < at_vec<DT>::n; v++) acc[v] += a[u] * w[u][v];
    }
    for (; j < hi; j++) {
      const int rw = rows ? rows[j] : j;
      float w[at_vec<DT>::n];
      at_ld16<DT>(Wt, (size_t)rw * out + o, w);
      const float a = x[rw];
#pragma unroll
      for (int v = 0; v < at_vec<DT>::n; v++) acc[v] += a * w[v];
    }
#pragma unroll
    for (int v = 0; v < at_vec<DT>::n; v++) atomicAdd(&y[o + v], acc[v]);
  } else {
    const int o = tile * blockDim.x + threadIdx.x;
    if (o >= out) return;
    float acc = 0.f;
    for (int j = lo; j < hi; j++) {
      const int rw = rows ? rows[j] : j;
      acc += x[rw] * at_ld<DT>(Wt, (size_t)rw * out + o);
    }
    atomicAdd(&y[o], acc);
  }
}

template <int DT>
__device__ __forceinline__ void gather(const float *x, const int *idx, const int *count, int in, int rows, int vec,
                                       const at_group &g) {
  int tile, p;
  const at_proj pr = gather_tile(g, vec ? at_vec<DT>::n : 1, &tile, &p);
  const size_t r = blockIdx.z;
  const size_t row = (size_t)p * rows + r;
  const int n = idx ? count[row] : in;
  const int chunk = (n + gridDim.y - 1) / gridDim.y;
  const int lo = blockIdx.y * chunk, hi = min(n, lo + chunk);
  if (lo >= hi) return;
  accumulate<DT>(pr.y + r * pr.out, pr.w, x + r * in, idx ? idx + row * in : nullptr, lo, hi, pr.out, tile, vec);
}

// at_gather_thr_{f32,f16,bf16}: threshold sites without at_select. grid as
//   at_gather (splits at least ceil(in / AT_THR_CHUNK)), block 128, static
//   shared memory AT_THR_CHUNK ints. Split y of token r owns the inputs
//   [y*chunk, (y+1)*chunk): the block keeps those with |x| > threshold
//   (ballots, one pass), lists them in shared memory and adds their weight
//   rows as at_gather does (y zeroed first). The first column tile of each
//   projection counts kept and seen inputs into stats.
#define AT_THR_CHUNK 2048

template <int DT>
__device__ __forceinline__ void gather_thr(const float *x, int in, int vec, unsigned long long *stats,
                                           const at_group &g) {
  __shared__ int sidx[AT_THR_CHUNK];
  __shared__ int wcount[AT_GATHER_THREADS / 32];
  int tile;
  const at_proj pr = gather_tile(g, vec ? at_vec<DT>::n : 1, &tile, nullptr);
  const float threshold = c_sites[pr.slot].threshold;
  const size_t r = blockIdx.z;
  const int chunk = (in + gridDim.y - 1) / gridDim.y;
  const int lo = blockIdx.y * chunk, hi = min(in, lo + chunk);
  if (lo >= hi) return;  // the whole block
  const float *xr = x + r * in;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int n = 0;
  for (int base = lo; base < hi; base += blockDim.x) {
    const int j = base + threadIdx.x;
    const bool keep = j < hi && fabsf(xr[j]) > threshold;
    const unsigned bal = __ballot_sync(AT_FULL, keep);
    if (lane == 0) wcount[warp] = __popc(bal);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < warps; w++) {
      before += w < warp ? wcount[w] : 0;
      total += wcount[w];
    }
    if (keep) sidx[n + before + __popc(bal & ((1u << lane) - 1))] = j;
    n += total;
    __syncthreads();
  }
  if (tile == 0 && threadIdx.x == 0 && pr.stat >= 0) {
    atomicAdd(&stats[2 * pr.stat], (unsigned long long)n);
    atomicAdd(&stats[2 * pr.stat + 1], (unsigned long long)(hi - lo));
  }
  accumulate<DT>(pr.y + r * pr.out, pr.w, xr, sidx, 0, n, pr.out, tile, vec);
}

#define AT_GATHER(suffix, DT)                                                                                 \
  extern "C" __global__ void __launch_bounds__(AT_GATHER_THREADS)                                            \
      at_gather_##suffix(const float *x, const int *idx, const int *count, int in, int rows, int vec,         \
                         at_group g) {                                                                        \
    gather<DT>(x, idx, count, in, rows, vec, g);                                                              \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(AT_GATHER_THREADS)                                            \
      at_gather_thr_##suffix(const float *x, int in, int vec, unsigned long long *stats, at_group g) {       \
    gather_thr<DT>(x, in, vec, stats, g);                                                                     \
  }

AT_GATHER(f32, AT_F32)
AT_GATHER(f16, AT_F16)
AT_GATHER(bf16, AT_BF16)
