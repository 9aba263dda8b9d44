//go:build cgo

// Products through a transposed (input-channel-major) weight, for package
// gather.
//
// Layout: T is in×out, row-major; row j starts at t + j*rowbytes and holds
// the out weights that input j meets, in the given dtype. Q8_0 rows are
// out/32 blocks of 34 bytes (an f16 scale, then 32 int8), so blocks run along
// the output dimension. Every function computes the output columns [c0, c1)
// on the calling thread. For Q8_0, c0 and c1 are multiples of 32.
//
// ga_gather (decode): y[o] = Σ_k x[idx[k]]·T[idx[k], o], or over all rows
// when idx is NULL. The Go side gives each thread a share of the kept rows
// over all columns (its own y). The float32 sums for up to CB columns stay
// in L1/L2 while GR kept rows at a time stream through them, so every
// weight access is a contiguous run of a whole row and GR runs are in
// flight; the rows of the group PD groups ahead are prefetched, since kept
// rows sit at scattered addresses that the hardware prefetchers do not
// guess. (Splitting the columns between threads instead, or blocks of 2048
// columns to keep the sums in L1, measured slower: short runs leave the
// prefetchers behind.)
//
// ga_dense (prefill): y[r*ldy + o] = Σ_j x[r*in + j]·T[j, o] for r < n. A
// KB×CB block of T is decoded to float32 once and multiplied against every
// activation row in MR×16 register tiles, so weights come from memory once.
//
// The AVX2+FMA+F16C functions carry a target attribute and are picked at
// start-up by __builtin_cpu_supports; other CPUs use the portable C below.
// All accumulation is float32.
#include "gather_kernels.h"

#include <string.h>

#include "../internal/dtype/dtype.h"

enum {
	CB = 16384, // output columns a block in ga_gather: 64 KiB of sums
	GR = 4,    // kept rows a step in ga_gather
#ifndef PD
	PD = 2, // groups of GR rows ahead that ga_gather prefetches
#endif
	KB = 256,  // weight rows decoded together in ga_dense
	DB = 64,   // output columns decoded together in ga_dense; a multiple of 32
	MR = 6,    // activation rows a register tile in ga_dense
};

// ---- portable scalar path ----

static inline int64_t row_of(const int32_t *idx, int64_t k) { return idx ? idx[k] : k; }

// gather_scalar decodes each kept row's block once into a buffer and adds
// it, scaled, to the sums.
static void gather_scalar(int dt, const uint8_t *t, int64_t rb, const int32_t *idx, int64_t nr, const float *x,
                          int64_t c0, int64_t c1, float *y) {
	float buf[256];
	for (int64_t b0 = c0; b0 < c1; b0 += 256) {
		int64_t w = c1 - b0 < 256 ? c1 - b0 : 256;
		float *yb = y + b0;
		memset(yb, 0, 4 * w);
		for (int64_t k = 0; k < nr; k++) {
			int64_t j = row_of(idx, k);
			float a = x[j];
			decode_scalar(dt, t + j * rb, b0, w, buf);
			for (int64_t i = 0; i < w; i++) yb[i] += a * buf[i];
		}
	}
}

// dense_scalar is one all-rows gather per activation row.
static void dense_scalar(int dt, const uint8_t *t, int64_t rb, int64_t in, const float *x, int64_t n, int64_t c0,
                         int64_t c1, float *y, int64_t ldy) {
	for (int64_t r = 0; r < n; r++) gather_scalar(dt, t, rb, NULL, in, x + r * in, c0, c1, y + r * ldy);
}

// ---- AVX2 + FMA + F16C path ----

#if defined(__x86_64__)
// add_rows adds Σ_g a[g]·row_g[b0+i] to yb[i] for i < w, g < ng (ng is a
// constant at every call, so the row loop unrolls). F32, F16, BF16.
AVX2_INLINE void add_rows(int dt, int ng, const uint8_t *const rows[GR], const float a[GR], int64_t b0, int64_t w,
                          float *yb) {
	__m256 av[GR];
	for (int g = 0; g < ng; g++) av[g] = _mm256_set1_ps(a[g]);
	int64_t i = 0;
	for (; i + 16 <= w; i += 16) {
		__m256 s0 = _mm256_loadu_ps(yb + i), s1 = _mm256_loadu_ps(yb + i + 8);
		for (int g = 0; g < ng; g++) {
			s0 = _mm256_fmadd_ps(load8(dt, rows[g], b0 + i), av[g], s0);
			s1 = _mm256_fmadd_ps(load8(dt, rows[g], b0 + i + 8), av[g], s1);
		}
		_mm256_storeu_ps(yb + i, s0);
		_mm256_storeu_ps(yb + i + 8, s1);
	}
	for (; i < w; i++) { // fewer than 16 columns left: scalar
		float s = yb[i], v;
		for (int g = 0; g < ng; g++) {
			decode_scalar(dt, rows[g], b0 + i, 1, &v);
			s += a[g] * v;
		}
		yb[i] = s;
	}
}

// add_rows_q8 is add_rows for Q8_0: b0 and w are multiples of 32, and each
// row's scale for a block is folded into its activation.
AVX2_INLINE void add_rows_q8(int ng, const uint8_t *const rows[GR], const float a[GR], int64_t b0, int64_t w,
                             float *yb) {
	for (int64_t i = 0; i < w; i += 32) {
		__m256 s0 = _mm256_loadu_ps(yb + i), s1 = _mm256_loadu_ps(yb + i + 8);
		__m256 s2 = _mm256_loadu_ps(yb + i + 16), s3 = _mm256_loadu_ps(yb + i + 24);
		for (int g = 0; g < ng; g++) {
			const uint8_t *blk = rows[g] + 34 * ((b0 + i) / 32);
			__m256 d = _mm256_set1_ps(a[g] * _cvtsh_ss(load_u16(blk)));
			s0 = _mm256_fmadd_ps(q8_8(blk + 2), d, s0);
			s1 = _mm256_fmadd_ps(q8_8(blk + 10), d, s1);
			s2 = _mm256_fmadd_ps(q8_8(blk + 18), d, s2);
			s3 = _mm256_fmadd_ps(q8_8(blk + 26), d, s3);
		}
		_mm256_storeu_ps(yb + i, s0);
		_mm256_storeu_ps(yb + i + 8, s1);
		_mm256_storeu_ps(yb + i + 16, s2);
		_mm256_storeu_ps(yb + i + 24, s3);
	}
}

// gather_avx2 walks the kept rows GR at a time over each block of columns.
AVX2_INLINE void gather_avx2(int dt, const uint8_t *t, int64_t rb, const int32_t *idx, int64_t nr, const float *x,
                             int64_t c0, int64_t c1, float *y) {
	for (int64_t b0 = c0; b0 < c1; b0 += CB) {
		int64_t w = c1 - b0 < CB ? c1 - b0 : CB;
		float *yb = y + b0;
		memset(yb, 0, 4 * w);
		const uint8_t *rows[GR];
		float a[GR];
		int64_t k = 0;
		for (; k + GR <= nr; k += GR) {
			// The runs of the group PD ahead: kept rows, and Q8_0 rows even when
			// all are read in order (measured: F32 reads all rows faster without).
			if ((idx || dt == DT_Q8_0) && k + (PD + 1) * GR <= nr)
				for (int g = 0; g < GR; g++) {
					const uint8_t *p = t + row_of(idx, k + PD * GR + g) * rb, *lo, *hi;
					if (dt == DT_Q8_0)
						lo = p + 34 * (b0 / 32), hi = p + 34 * ((b0 + w) / 32);
					else if (dt == DT_F32)
						lo = p + 4 * b0, hi = p + 4 * (b0 + w);
					else
						lo = p + 2 * b0, hi = p + 2 * (b0 + w);
					for (const uint8_t *q = lo; q < hi; q += 64) _mm_prefetch((const char *)q, _MM_HINT_T0);
				}
			for (int g = 0; g < GR; g++) {
				int64_t j = row_of(idx, k + g);
				rows[g] = t + j * rb;
				a[g] = x[j];
			}
			if (dt == DT_Q8_0)
				add_rows_q8(GR, rows, a, b0, w, yb);
			else
				add_rows(dt, GR, rows, a, b0, w, yb);
		}
		for (; k < nr; k++) {
			int64_t j = row_of(idx, k);
			rows[0] = t + j * rb;
			a[0] = x[j];
			if (dt == DT_Q8_0)
				add_rows_q8(1, rows, a, b0, w, yb);
			else
				add_rows(dt, 1, rows, a, b0, w, yb);
		}
	}
}

// micro_avx2 computes out[r*16 + c] = Σ_k xs[r][k]·w[k*DB + c] for r < MR,
// c < 16, k < kl: twelve accumulators, two weight loads and six broadcasts
// for twelve FMAs a step.
AVX2_INLINE void micro_avx2(const float *w, const float *const xs[MR], int64_t kl, float out[MR * 16]) {
	__m256 c[MR][2];
	for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
	for (int64_t k = 0; k < kl; k++) {
		__m256 w0 = _mm256_loadu_ps(w + k * DB), w1 = _mm256_loadu_ps(w + k * DB + 8);
		for (int r = 0; r < MR; r++) {
			__m256 v = _mm256_broadcast_ss(xs[r] + k);
			c[r][0] = _mm256_fmadd_ps(w0, v, c[r][0]);
			c[r][1] = _mm256_fmadd_ps(w1, v, c[r][1]);
		}
	}
	for (int r = 0; r < MR; r++) {
		_mm256_storeu_ps(out + 16 * r, c[r][0]);
		_mm256_storeu_ps(out + 16 * r + 8, c[r][1]);
	}
}

// dense_avx2 decodes KB×DB blocks of T (columns past c1 zeroed) and runs
// each against all activation rows; a tile past the last row repeats it
// and drops the result.
AVX2_INLINE void dense_avx2(int dt, const uint8_t *t, int64_t rb, int64_t in, const float *x, int64_t n, int64_t c0,
                            int64_t c1, float *y, int64_t ldy) {
	float buf[KB * DB] __attribute__((aligned(32)));
	for (int64_t cb = c0; cb < c1; cb += DB) {
		int64_t cw = c1 - cb < DB ? c1 - cb : DB;
		for (int64_t kb = 0; kb < in; kb += KB) {
			int64_t kl = in - kb < KB ? in - kb : KB;
			for (int64_t k = 0; k < kl; k++) {
				decode_avx2(dt, t + (kb + k) * rb, cb, cw, buf + k * DB);
				if (cw < DB) memset(buf + k * DB + cw, 0, 4 * (DB - cw));
			}
			for (int64_t r = 0; r < n; r += MR) {
				const float *xs[MR];
				for (int i = 0; i < MR; i++) xs[i] = x + (r + i < n ? r + i : n - 1) * in + kb;
				int64_t nr = n - r < MR ? n - r : MR;
				for (int64_t c = 0; c < cw; c += 16) {
					float out[MR * 16];
					micro_avx2(buf + c, xs, kl, out);
					int64_t nc = cw - c < 16 ? cw - c : 16;
					for (int64_t i = 0; i < nr; i++) {
						float *d = y + (r + i) * ldy + cb + c;
						for (int64_t o = 0; o < nc; o++) d[o] = (kb ? d[o] : 0) + out[16 * i + o];
					}
				}
			}
		}
	}
}

// One function per dtype, so that the dtype switches inside fold away.
#define PER_DTYPE(name)                                                                                         \
	AVX2 static void gather_##name(int dt, const uint8_t *t, int64_t rb, const int32_t *idx, int64_t nr,       \
	                               const float *x, int64_t c0, int64_t c1, float *y) {                          \
		(void)dt;                                                                                           \
		gather_avx2(DT_##name, t, rb, idx, nr, x, c0, c1, y);                                               \
	}                                                                                                           \
	AVX2 static void dense_##name(int dt, const uint8_t *t, int64_t rb, int64_t in, const float *x, int64_t n, \
	                              int64_t c0, int64_t c1, float *y, int64_t ldy) {                              \
		(void)dt;                                                                                           \
		dense_avx2(DT_##name, t, rb, in, x, n, c0, c1, y, ldy);                                             \
	}
PER_DTYPE(F32)
PER_DTYPE(F16)
PER_DTYPE(BF16)
PER_DTYPE(Q8_0)
#undef PER_DTYPE

#endif

// ---- dispatch ----

typedef void gather_fn(int dt, const uint8_t *t, int64_t rb, const int32_t *idx, int64_t nr, const float *x,
                       int64_t c0, int64_t c1, float *y);
typedef void dense_fn(int dt, const uint8_t *t, int64_t rb, int64_t in, const float *x, int64_t n, int64_t c0,
                      int64_t c1, float *y, int64_t ldy);

static gather_fn *gathers[4] = {gather_scalar, gather_scalar, gather_scalar, gather_scalar};
static dense_fn *denses[4] = {dense_scalar, dense_scalar, dense_scalar, dense_scalar};
static int isa;

int ga_isa(void) { return isa; }

// ga_set_isa selects an instruction set (for tests); it returns the one in
// use, which stays unchanged if the CPU lacks the one asked for.
int ga_set_isa(int want) {
	if (want == GA_SCALAR) {
		for (int d = 0; d < 4; d++) gathers[d] = gather_scalar, denses[d] = dense_scalar;
		isa = GA_SCALAR;
	}
#if defined(__x86_64__)
	if (want == GA_AVX2 && have_avx2()) {
		gather_fn *g[4] = {gather_F32, gather_F16, gather_BF16, gather_Q8_0};
		dense_fn *d[4] = {dense_F32, dense_F16, dense_BF16, dense_Q8_0};
		memcpy(gathers, g, sizeof g);
		memcpy(denses, d, sizeof d);
		isa = GA_AVX2;
	}
#endif
	return isa;
}

__attribute__((constructor)) static void pick_isa(void) { ga_set_isa(GA_AVX2); }

void ga_gather(int dt, const uint8_t *t, int64_t rb, const int32_t *idx, int64_t nr, const float *x, int64_t c0,
               int64_t c1, float *y) {
	gathers[dt](dt, t, rb, idx, nr, x, c0, c1, y);
}

void ga_dense(int dt, const uint8_t *t, int64_t rb, int64_t in, const float *x, int64_t n, int64_t c0, int64_t c1,
              float *y, int64_t ldy) {
	denses[dt](dt, t, rb, in, x, n, c0, c1, y, ldy);
}
