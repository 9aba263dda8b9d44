//go:build cgo

// Matrix products for package matmul.
//
// Layout: W is row-major (rows = outputs, cols = inputs); row o starts at
// w + o*rowbytes and holds cols elements of the given dtype, at any byte
// alignment (weights may sit in a memory-mapped file). x is n×cols float32,
// row-major; result r, output o goes to dst[r*ldd + o]. mm_rows handles the
// rows it is given on the calling thread; the Go side splits rows across
// threads, one call per chunk.
//
// Two paths: n == 1 (decode) streams each weight row once through a fused
// convert-and-FMA loop, which is memory-bound. n > 1 (prefill) decodes a
// block of RB weight rows × KB columns to float32 once into an L1-sized
// buffer and multiplies it against every activation row in 3×4 register
// tiles, so weights come from memory once and the loop is compute-bound.
//
// One binary runs on any x86-64: the AVX2+FMA+F16C functions carry a target
// attribute and are picked at start-up by __builtin_cpu_supports; everything
// else (and every other architecture) uses the portable C below. All
// accumulation is float32.
#include "matmul_kernels.h"

#include <string.h>

#include "../internal/dtype/dtype.h"

enum {
	RB = 6,   // weight rows decoded together for n > 1; a multiple of MR
	KB = 512, // columns decoded together; a multiple of the Q8_0 block (32)
	MR = 3,   // weight rows a register tile
	NR = 4,   // activation rows a register tile
};

// ---- portable scalar path ----

// micro_scalar computes out[i*NR+j] = ws[i] · xs[j] for i < MR, j < nx
// over len elements. Eight partial sums per dot keep the float32 rounding
// error of long rows small and let the compiler vectorise.
static void micro_scalar(const float *const ws[MR], const float *const xs[NR], int nx, int64_t len,
                         float out[MR * NR]) {
	for (int i = 0; i < MR; i++) {
		for (int j = 0; j < nx; j++) {
			const float *w = ws[i], *x = xs[j];
			float s[8] = {0};
			int64_t k = 0;
			for (; k + 8 <= len; k += 8)
				for (int l = 0; l < 8; l++) s[l] += w[k + l] * x[k + l];
			float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
			for (; k < len; k++) t += w[k] * x[k];
			out[i * NR + j] = t;
		}
	}
}

typedef void decode_fn(int dt, const uint8_t *row, int64_t k0, int64_t len, float *out);
typedef void micro_fn(const float *const ws[MR], const float *const xs[NR], int nx, int64_t len, float out[MR * NR]);

// mm_tiled is the blocked product for any n: decode RB×KB of W, then run it
// against all activation rows, MR weight rows × NR activation rows a tile.
// Tiles past the last row repeat the last row and drop the result.
static void mm_tiled(int dt, const uint8_t *w, int64_t rowbytes, int64_t rows, int64_t cols,
                     const float *x, int64_t n, float *dst, int64_t ldd, decode_fn *decode, micro_fn *micro) {
	float buf[RB * KB];
	for (int64_t ob = 0; ob < rows; ob += RB) {
		int64_t rb = rows - ob < RB ? rows - ob : RB;
		for (int64_t kb = 0; kb < cols; kb += KB) {
			int64_t kl = cols - kb < KB ? cols - kb : KB;
			for (int64_t i = 0; i < rb; i++) decode(dt, w + (ob + i) * rowbytes, kb, kl, buf + i * KB);
			for (int64_t r = 0; r < n; r += NR) {
				const float *xs[NR];
				for (int j = 0; j < NR; j++) xs[j] = x + (r + j < n ? r + j : n - 1) * cols + kb;
				int nj = n - r < NR ? (int)(n - r) : NR;
				for (int64_t i = 0; i < rb; i += MR) {
					const float *ws[MR];
					for (int ii = 0; ii < MR; ii++) ws[ii] = buf + (i + ii < rb ? i + ii : rb - 1) * KB;
					float out[MR * NR];
					micro(ws, xs, nj, kl, out);
					int ni = rb - i < MR ? (int)(rb - i) : MR;
					for (int j = 0; j < nj; j++) {
						float *d = dst + (r + j) * ldd + ob + i;
						for (int ii = 0; ii < ni; ii++) d[ii] = (kb ? d[ii] : 0) + out[ii * NR + j];
					}
				}
			}
		}
	}
}

static double sum_scalar(const float *p, int64_t n) {
	float s[8] = {0};
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++) s[l] += p[i + l];
	double t = 0;
	for (int l = 0; l < 8; l++) t += s[l];
	for (; i < n; i++) t += p[i];
	return t;
}

// ---- AVX2 + FMA + F16C path ----

#if defined(__x86_64__)

// tail_dot is the dot of elements [i, cols) of a row with x, fewer than
// eight, in scalar.
static float tail_dot(int dt, const uint8_t *row, int64_t i, int64_t cols, const float *x) {
	float t[8], s = 0;
	decode_scalar(dt, row, i, cols - i, t);
	for (int64_t k = 0; k < cols - i; k++) s += t[k] * x[i + k];
	return s;
}

// matvec_elem computes dst[o] = row_o · x for an F32, F16 or BF16 matrix,
// 32 elements a step in four accumulators to cover FMA latency. Rows go one
// after another: one sequential stream measured faster here than walking
// several rows at once, which would share the activation loads.
AVX2_INLINE void matvec_elem(int dt, const uint8_t *w, int64_t rowbytes, int64_t rows, int64_t cols,
                             const float *x, float *dst) {
	for (int64_t o = 0; o < rows; o++) {
		const uint8_t *row = w + o * rowbytes;
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		int64_t i = 0;
		for (; i + 32 <= cols; i += 32) {
			a0 = _mm256_fmadd_ps(load8(dt, row, i), _mm256_loadu_ps(x + i), a0);
			a1 = _mm256_fmadd_ps(load8(dt, row, i + 8), _mm256_loadu_ps(x + i + 8), a1);
			a2 = _mm256_fmadd_ps(load8(dt, row, i + 16), _mm256_loadu_ps(x + i + 16), a2);
			a3 = _mm256_fmadd_ps(load8(dt, row, i + 24), _mm256_loadu_ps(x + i + 24), a3);
		}
		for (; i + 8 <= cols; i += 8) a0 = _mm256_fmadd_ps(load8(dt, row, i), _mm256_loadu_ps(x + i), a0);
		float s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
		dst[o] = i < cols ? s + tail_dot(dt, row, i, cols, x) : s;
	}
}

// q8_block adds to acc the scaled dot of one Q8_0 block (f16 scale, 32
// int8 quants) with 32 activations. The loop is bound by arithmetic
// throughput, not latency, so one chain and no extra add is fastest.
AVX2_INLINE __m256 q8_block(const uint8_t *blk, const float *x, __m256 acc) {
	__m256 s = _mm256_mul_ps(q8_8(blk + 2), _mm256_loadu_ps(x));
	s = _mm256_fmadd_ps(q8_8(blk + 10), _mm256_loadu_ps(x + 8), s);
	s = _mm256_fmadd_ps(q8_8(blk + 18), _mm256_loadu_ps(x + 16), s);
	s = _mm256_fmadd_ps(q8_8(blk + 26), _mm256_loadu_ps(x + 24), s);
	return _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(load_u16(blk))), s, acc);
}

// matvec_q8 is matvec_elem for Q8_0, two blocks a step in two accumulators.
AVX2 static void matvec_q8(const uint8_t *w, int64_t rowbytes, int64_t rows, int64_t cols, const float *x,
                           float *dst) {
	int64_t nb = cols / 32;
	for (int64_t o = 0; o < rows; o++) {
		const uint8_t *row = w + o * rowbytes;
		__m256 a0 = _mm256_setzero_ps(), a1 = a0;
		int64_t b = 0;
		for (; b + 2 <= nb; b += 2) {
			a0 = q8_block(row + 34 * b, x + 32 * b, a0);
			a1 = q8_block(row + 34 * b + 34, x + 32 * b + 32, a1);
		}
		if (b < nb) a0 = q8_block(row + 34 * b, x + 32 * b, a0);
		dst[o] = hsum8(_mm256_add_ps(a0, a1));
	}
}

AVX2 static void matvec_f32(const uint8_t *w, int64_t rb, int64_t rows, int64_t cols, const float *x, float *dst) {
	matvec_elem(DT_F32, w, rb, rows, cols, x, dst);
}
AVX2 static void matvec_f16(const uint8_t *w, int64_t rb, int64_t rows, int64_t cols, const float *x, float *dst) {
	matvec_elem(DT_F16, w, rb, rows, cols, x, dst);
}
AVX2 static void matvec_bf16(const uint8_t *w, int64_t rb, int64_t rows, int64_t cols, const float *x, float *dst) {
	matvec_elem(DT_BF16, w, rb, rows, cols, x, dst);
}

// micro_avx2 is micro_scalar with its MR×NR = 12 accumulators in
// registers: each step of 8 loads three weight vectors and four activation
// vectors for 12 FMAs. It always computes all NR activation rows.
AVX2 static void micro_avx2(const float *const ws[MR], const float *const xs[NR], int nx, int64_t len,
                            float out[MR * NR]) {
	(void)nx;
	const float *w0 = ws[0], *w1 = ws[1], *w2 = ws[2];
	const float *x0 = xs[0], *x1 = xs[1], *x2 = xs[2], *x3 = xs[3];
	__m256 c[MR][NR];
	for (int i = 0; i < MR; i++)
		for (int j = 0; j < NR; j++) c[i][j] = _mm256_setzero_ps();
	int64_t k = 0;
	for (; k + 8 <= len; k += 8) {
		__m256 a = _mm256_loadu_ps(w0 + k), b = _mm256_loadu_ps(w1 + k), e = _mm256_loadu_ps(w2 + k), v;
#define MICRO_COL(j, xp)                              \
	v = _mm256_loadu_ps(xp + k);                      \
	c[0][j] = _mm256_fmadd_ps(a, v, c[0][j]);         \
	c[1][j] = _mm256_fmadd_ps(b, v, c[1][j]);         \
	c[2][j] = _mm256_fmadd_ps(e, v, c[2][j]);
		MICRO_COL(0, x0)
		MICRO_COL(1, x1)
		MICRO_COL(2, x2)
		MICRO_COL(3, x3)
#undef MICRO_COL
	}
	for (int i = 0; i < MR; i++)
		for (int j = 0; j < NR; j++) {
			float s = hsum8(c[i][j]);
			for (int64_t kk = k; kk < len; kk++) s += ws[i][kk] * xs[j][kk];
			out[i * NR + j] = s;
		}
}

AVX2 static double sum_avx2(const float *p, int64_t n) {
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	int64_t i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
		a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
		a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
		a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
	}
	double t = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
	return t + sum_scalar(p + i, n - i);
}

typedef void matvec_fn(const uint8_t *w, int64_t rowbytes, int64_t rows, int64_t cols, const float *x, float *dst);
static matvec_fn *const matvec_avx2[4] = {matvec_f32, matvec_f16, matvec_bf16, matvec_q8};

#endif

// ---- dispatch ----

static int isa;

__attribute__((constructor)) static void pick_isa(void) { isa = have_avx2() ? MM_AVX2 : MM_SCALAR; }

int mm_isa(void) { return isa; }

// mm_set_isa selects an instruction set (for tests); it returns the one in
// use, which stays unchanged if the CPU lacks the one asked for.
int mm_set_isa(int want) {
	if (want == MM_SCALAR || (want == MM_AVX2 && have_avx2())) isa = want;
	return isa;
}

void mm_rows(int dt, const uint8_t *w, int64_t rowbytes, int64_t rows, int64_t cols, const float *x, int64_t n,
             float *dst, int64_t ldd) {
#if defined(__x86_64__)
	if (isa == MM_AVX2) {
		if (n == 1)
			matvec_avx2[dt](w, rowbytes, rows, cols, x, dst);
		else
			mm_tiled(dt, w, rowbytes, rows, cols, x, n, dst, ldd, decode_avx2, micro_avx2);
		return;
	}
#endif
	mm_tiled(dt, w, rowbytes, rows, cols, x, n, dst, ldd, decode_scalar, micro_scalar);
}

double mm_sum(const float *p, int64_t n) {
#if defined(__x86_64__)
	if (isa == MM_AVX2) return sum_avx2(p, n);
#endif
	return sum_scalar(p, n);
}
