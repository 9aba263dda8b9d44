//go:build cgo

// Kernels of package htsr's reduction of a symmetric matrix to tridiagonal
// form (tridiag.go): two matrix products and the steps of the bulge chase.
// The Go side (kernels_cgo.go) splits the products' rows across threads and
// calls a product once a thread.
//
// Layout: matrices are row-major float64 with a row stride ld. A symmetric
// matrix is held in full storage of which only the upper triangle (column ≥
// row) is read and kept current; the strict lower triangle holds stale values
// and may be overwritten.
//
// htsr_gemm adds alpha·X·Yᵀ to rows [i0, i1) of the n-column C, where X
// and Y have k columns: C[i][j] += alpha·Σ_p X[i][p]·Y[j][p]. With upper
// set it skips the 6×8 tiles of C that lie wholly below the diagonal
// (tiles that cross it are computed in full). Blocking follows
// GotoBLAS/BLIS: KC columns of NC rows of Y are packed into 8-wide panels
// (kept in L3), KC columns of MC rows of X into 6-high panels (kept in L2),
// and each 6×8 tile of C is accumulated in registers over KC.
//
// htsr_symm computes the share of rows [i0, i1) of the upper triangle in
// A·V, for the symmetric m×m A held in the upper triangle of a and the m×nv
// V: like a symmetric matrix-vector product it reads each a_ip (p ≥ i) once,
// where it lies, sets row i of Z to Σ_{p≥i} a_ip·V[p] and adds a_ip·V[i] to
// row p of Zt for p > i. Z + Σ Zt over all shares is A·V; each thread needs
// its own zeroed Zt. With nv = 32, a product does only 64 flops per element
// of A, too few to repay packing A, and reading A by columns (the lower
// triangle) would cost a TLB miss per element.
//
// htsr_chase_left and htsr_chase_right apply one reflector of the bulge
// chase to blocks of at most 32×32 of the band matrix; see chase_left_body.
//
// One binary runs on any x86-64: the AVX2+FMA functions carry a target
// attribute and are picked at start-up by __builtin_cpu_supports; everything
// else (and every other architecture) uses the portable C.
#include "htsr_kernels.h"

#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum {
	MR = 6,    // rows of a register tile
	NR = 8,    // columns of a register tile
	KC = 256,  // inner dimension packed at once
	MC = 96,   // rows of X packed at once (MC·KC·8 = 192 KiB)
	NC = 2048, // rows of Y packed at once (NC·KC·8 = 4 MiB)
};

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// A kernel adds alpha times the product of the kc-deep packed panels ap
// (MR high) and bp (NR wide) to the mr×nr corner of the tile at c.
typedef void kernel_fn(int64_t kc, const double *ap, const double *bp, double alpha, double *c, int64_t ldc,
                       int mr, int nr);

static void add_tile(const double *t, double alpha, double *c, int64_t ldc, int mr, int nr) {
	for (int r = 0; r < mr; r++)
		for (int q = 0; q < nr; q++) c[r * ldc + q] += alpha * t[r * NR + q];
}

// ---- portable path ----

static void kernel_scalar(int64_t kc, const double *ap, const double *bp, double alpha, double *c, int64_t ldc,
                          int mr, int nr) {
	double t[MR * NR] = {0};
	for (int64_t p = 0; p < kc; p++, ap += MR, bp += NR)
		for (int r = 0; r < MR; r++)
			for (int q = 0; q < NR; q++) t[r * NR + q] += ap[r] * bp[q];
	add_tile(t, alpha, c, ldc, mr, nr);
}

static inline double sym_at(const double *a, int64_t lda, int64_t i, int64_t p) {
	return p >= i ? a[i * lda + p] : a[p * lda + i];
}

static void symm_scalar(int64_t i0, int64_t i1, int64_t m, int64_t nv, const double *a, int64_t lda,
                        const double *v, int64_t ldv, double *z, double *zt, int64_t ldz) {
	for (int64_t i = i0; i < i1; i++) {
		const double *ai = a + i * lda, *vi = v + i * ldv;
		double *zi = z + i * ldz;
		for (int64_t q = 0; q < nv; q++) zi[q] = ai[i] * vi[q];
		for (int64_t p = i + 1; p < m; p++) {
			const double *vp = v + p * ldv;
			double *ztp = zt + p * ldz;
			for (int64_t q = 0; q < nv; q++) {
				zi[q] += ai[p] * vp[q];
				ztp[q] += ai[p] * vi[q];
			}
		}
	}
}

// The bulge-chasing steps of the band reduction. s points at S[j, j] of a
// band matrix stored by rows, S[j+r, j+c] = s[r·ld + c − r] for c ≥ r; the
// reflector H = I − τ·v·vᵀ acts on the l indices from j, and the block
// right of them is B = S[j:j+l, j+l:j+l+l2], row r at s[r·ld + l − r]. The
// bodies are inlined into a portable and an AVX2 function each, which the
// compiler vectorizes for its target.

// chase_left_body replaces the diagonal block D = S[j:j+l, j:j+l] by H·D·H and
// B by H·B; w is scratch of max(l, l2) values.
static inline __attribute__((always_inline)) void chase_left_body(double *s, int64_t ld, int64_t l, int64_t l2,
                                                                   const double *v, double tau, double *w) {
	// D −= v·wᵀ + w·vᵀ with w = τ·D·v − (τ²/2)(vᵀ·D·v)·v.
	for (int64_t r = 0; r < l; r++) w[r] = 0;
	for (int64_t r = 0; r < l; r++) {
		const double *dr = s + r * ld - r; // dr[c] = D[r, c] for c ≥ r
		double vr = v[r], sum = dr[r] * vr;
		for (int64_t c = r + 1; c < l; c++) {
			sum += dr[c] * v[c];
			w[c] += dr[c] * vr;
		}
		w[r] += sum;
	}
	double dot = 0;
	for (int64_t r = 0; r < l; r++) {
		w[r] *= tau;
		dot += w[r] * v[r];
	}
	double alpha = -tau / 2 * dot;
	for (int64_t r = 0; r < l; r++) w[r] += alpha * v[r];
	for (int64_t r = 0; r < l; r++) {
		double *dr = s + r * ld - r, vr = v[r], wr = w[r];
		for (int64_t c = r; c < l; c++) dr[c] -= vr * w[c] + wr * v[c];
	}
	// B −= τ·v·(Bᵀ·v)ᵀ.
	for (int64_t c = 0; c < l2; c++) w[c] = 0;
	for (int64_t r = 0; r < l; r++) {
		const double *br = s + r * ld + l - r;
		for (int64_t c = 0; c < l2; c++) w[c] += v[r] * br[c];
	}
	for (int64_t r = 0; r < l; r++) {
		double *br = s + r * ld + l - r, f = tau * v[r];
		for (int64_t c = 0; c < l2; c++) br[c] -= f * w[c];
	}
}

// chase_right_body replaces rows 1 … l−1 of B by B·H2 for the reflector
// H2 = I − τ·u·uᵀ on the l2 indices of B's columns.
static inline __attribute__((always_inline)) void chase_right_body(double *s, int64_t ld, int64_t l, int64_t l2,
                                                                    const double *u, double tau) {
	for (int64_t r = 1; r < l; r++) {
		double *br = s + r * ld + l - r, dot = 0;
		for (int64_t c = 0; c < l2; c++) dot += br[c] * u[c];
		double f = tau * dot;
		for (int64_t c = 0; c < l2; c++) br[c] -= f * u[c];
	}
}

static void chase_left_scalar(double *s, int64_t ld, int64_t l, int64_t l2, const double *v, double tau, double *w) {
	chase_left_body(s, ld, l, l2, v, tau, w);
}

static void chase_right_scalar(double *s, int64_t ld, int64_t l, int64_t l2, const double *u, double tau) {
	chase_right_body(s, ld, l, l2, u, tau);
}

// ---- AVX2 + FMA path ----

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))

// ROWS adds the products of the 8 values in b0, b1 with the values at the
// six pointers to the 6×8 accumulators c00 … c51, using the scratch bc.
#define ROW(r, ptr)                                 \
	bc = _mm256_broadcast_sd(ptr);              \
	c##r##0 = _mm256_fmadd_pd(bc, b0, c##r##0); \
	c##r##1 = _mm256_fmadd_pd(bc, b1, c##r##1);
#define ROWS(p0, p1, p2, p3, p4, p5) ROW(0, p0) ROW(1, p1) ROW(2, p2) ROW(3, p3) ROW(4, p4) ROW(5, p5)

AVX2 static void kernel_avx2(int64_t kc, const double *ap, const double *bp, double alpha, double *c, int64_t ldc,
                             int mr, int nr) {
	__m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
	__m256d c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
	for (int64_t p = 0; p < kc; p++, ap += MR, bp += NR) {
		__m256d b0 = _mm256_load_pd(bp), b1 = _mm256_load_pd(bp + 4), bc;
		ROWS(ap + 0, ap + 1, ap + 2, ap + 3, ap + 4, ap + 5)
	}
	if (mr == MR && nr == NR) {
		__m256d al = _mm256_set1_pd(alpha);
#define STORE(r)                                                                              \
	_mm256_storeu_pd(c + r * ldc, _mm256_fmadd_pd(al, c##r##0, _mm256_loadu_pd(c + r * ldc))); \
	_mm256_storeu_pd(c + r * ldc + 4, _mm256_fmadd_pd(al, c##r##1, _mm256_loadu_pd(c + r * ldc + 4)));
		STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5)
#undef STORE
		return;
	}
	double t[MR * NR];
	__m256d acc[2 * MR] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
	for (int i = 0; i < 2 * MR; i++) _mm256_storeu_pd(t + 4 * i, acc[i]);
	add_tile(t, alpha, c, ldc, mr, nr);
}

// symm_avx2 takes six rows of A against four columns of V at a time, so
// that the accumulators of both products and the six rows of V that the
// transposed product needs fit in the sixteen registers. It walks A in
// blocks of PB columns, each once for every four columns of V, so that the
// block's rows of V and Zt stay in cache.
AVX2 static void symm_avx2(int64_t i0, int64_t i1, int64_t m, int64_t nv, const double *a, int64_t lda,
                           const double *v, int64_t ldv, double *z, double *zt, int64_t ldz) {
	enum { PB = 128 };
	int64_t i = i0;
	for (; i + MR <= i1; i += MR) {
		const double *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda,
		             *a5 = a4 + lda;
		double *z0 = z + i * ldz, *z1 = z0 + ldz, *z2 = z1 + ldz, *z3 = z2 + ldz, *z4 = z3 + ldz, *z5 = z4 + ldz;
		for (int64_t q = 0; q + 4 <= nv; q += 4) { // the diagonal block, in full
			__m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, bc;
			for (int64_t p = i; p < i + MR; p++) {
				__m256d b = _mm256_loadu_pd(v + p * ldv + q);
#define DIAG(r) bc = _mm256_set1_pd(sym_at(a, lda, i + r, p)), s##r = _mm256_fmadd_pd(bc, b, s##r);
				DIAG(0) DIAG(1) DIAG(2) DIAG(3) DIAG(4) DIAG(5)
#undef DIAG
			}
			_mm256_storeu_pd(z0 + q, s0), _mm256_storeu_pd(z1 + q, s1), _mm256_storeu_pd(z2 + q, s2);
			_mm256_storeu_pd(z3 + q, s3), _mm256_storeu_pd(z4 + q, s4), _mm256_storeu_pd(z5 + q, s5);
		}
		for (int64_t p0 = i + MR; p0 < m; p0 += PB) {
			int64_t p1 = min64(p0 + PB, m);
			for (int64_t q = 0; q + 4 <= nv; q += 4) {
				const double *vq = v + q;
				__m256d s0 = _mm256_loadu_pd(z0 + q), s1 = _mm256_loadu_pd(z1 + q), s2 = _mm256_loadu_pd(z2 + q);
				__m256d s3 = _mm256_loadu_pd(z3 + q), s4 = _mm256_loadu_pd(z4 + q), s5 = _mm256_loadu_pd(z5 + q);
				__m256d v0 = _mm256_loadu_pd(vq + i * ldv), v1 = _mm256_loadu_pd(vq + (i + 1) * ldv);
				__m256d v2 = _mm256_loadu_pd(vq + (i + 2) * ldv), v3 = _mm256_loadu_pd(vq + (i + 3) * ldv);
				__m256d v4 = _mm256_loadu_pd(vq + (i + 4) * ldv), v5 = _mm256_loadu_pd(vq + (i + 5) * ldv);
				for (int64_t p = p0; p < p1; p++) {
					// Two partial sums for Zt halve the chain of dependent FMAs.
					__m256d b = _mm256_loadu_pd(vq + p * ldv), t = _mm256_loadu_pd(zt + p * ldz + q), bc;
					__m256d u = _mm256_setzero_pd();
#define BOTH(r, t)                           \
	bc = _mm256_broadcast_sd(a##r + p);  \
	s##r = _mm256_fmadd_pd(bc, b, s##r); \
	t = _mm256_fmadd_pd(bc, v##r, t);
					BOTH(0, t) BOTH(1, u) BOTH(2, t) BOTH(3, u) BOTH(4, t) BOTH(5, u)
#undef BOTH
					_mm256_storeu_pd(zt + p * ldz + q, _mm256_add_pd(t, u));
				}
				_mm256_storeu_pd(z0 + q, s0), _mm256_storeu_pd(z1 + q, s1), _mm256_storeu_pd(z2 + q, s2);
				_mm256_storeu_pd(z3 + q, s3), _mm256_storeu_pd(z4 + q, s4), _mm256_storeu_pd(z5 + q, s5);
			}
		}
	}
	symm_scalar(i, i1, m, nv, a, lda, v, ldv, z, zt, ldz);
}

AVX2 static void chase_left_avx2(double *s, int64_t ld, int64_t l, int64_t l2, const double *v, double tau,
                                 double *w) {
	chase_left_body(s, ld, l, l2, v, tau, w);
}

AVX2 static void chase_right_avx2(double *s, int64_t ld, int64_t l, int64_t l2, const double *u, double tau) {
	chase_right_body(s, ld, l, l2, u, tau);
}

static int have_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
static int have_avx2(void) { return 0; }
#define kernel_avx2 kernel_scalar
#define symm_avx2 symm_scalar
#define chase_left_avx2 chase_left_scalar
#define chase_right_avx2 chase_right_scalar
#endif

static int isa;

__attribute__((constructor)) static void pick_isa(void) { isa = have_avx2() ? HTSR_AVX2 : HTSR_SCALAR; }

int htsr_isa(void) { return isa; }

// htsr_set_isa selects an instruction set (for tests); it returns the one in
// use, which differs when the CPU lacks the one asked for.
int htsr_set_isa(int want) {
	if (want == HTSR_SCALAR || (want == HTSR_AVX2 && have_avx2())) isa = want;
	return isa;
}

// ---- packing and the blocked product ----

// pack copies columns [p0, p0+kc) of rows [i0, i0+mc) of X into panels of
// w rows, each stored column by column, padding the last panel with zero
// rows: MR-high panels of X, NR-wide panels of Y.
static void pack(const double *x, int64_t ldx, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int w, double *ap) {
	for (int64_t i = i0; i < i0 + mc; i += w) {
		int mr = (int)min64(w, i0 + mc - i);
		for (int64_t p = p0; p < p0 + kc; p++)
			for (int r = 0; r < w; r++) *ap++ = r < mr ? x[(i + r) * ldx + p] : 0;
	}
}

void htsr_gemm(int64_t i0, int64_t i1, int64_t n, int64_t k, double alpha, const double *x, int64_t ldx,
               const double *y, int64_t ldy, double *c, int64_t ldc, int upper) {
	kernel_fn *kern = isa == HTSR_AVX2 ? kernel_avx2 : kernel_scalar;
	double *ap = aligned_alloc(64, sizeof(double) * MC * KC);
	double *bp = aligned_alloc(64, sizeof(double) * NC * KC);
	if (!ap || !bp) abort();
	// Columns left of i0 rounded down to a tile lie below every row here.
	for (int64_t jc = upper ? i0 / NR * NR : 0; jc < n; jc += NC) {
		int64_t nc = min64(NC, n - jc);
		for (int64_t pc = 0; pc < k; pc += KC) {
			int64_t kc = min64(KC, k - pc);
			pack(y, ldy, jc, nc, pc, kc, NR, bp);
			for (int64_t ic = i0; ic < i1; ic += MC) {
				int64_t mc = min64(MC, i1 - ic);
				if (upper && jc + nc <= ic) continue; // below the diagonal
				pack(x, ldx, ic, mc, pc, kc, MR, ap);
				for (int64_t jr = 0; jr < nc; jr += NR) {
					int nr = (int)min64(NR, nc - jr);
					for (int64_t ir = 0; ir < mc; ir += MR) {
						if (upper && jc + jr + nr <= ic + ir) continue;
						kern(kc, ap + ir * kc, bp + jr * kc, alpha, c + (ic + ir) * ldc + jc + jr, ldc,
						     (int)min64(MR, mc - ir), nr);
					}
				}
			}
		}
	}
	free(ap);
	free(bp);
}

void htsr_symm(int64_t i0, int64_t i1, int64_t m, int64_t nv, const double *a, int64_t lda, const double *v,
               int64_t ldv, double *z, double *zt, int64_t ldz) {
	(isa == HTSR_AVX2 && nv % 4 == 0 ? symm_avx2 : symm_scalar)(i0, i1, m, nv, a, lda, v, ldv, z, zt, ldz);
}

void htsr_chase_left(double *s, int64_t ld, int64_t l, int64_t l2, const double *v, double tau, double *w) {
	(isa == HTSR_AVX2 ? chase_left_avx2 : chase_left_scalar)(s, ld, l, l2, v, tau, w);
}

void htsr_chase_right(double *s, int64_t ld, int64_t l, int64_t l2, const double *u, double tau) {
	(isa == HTSR_AVX2 ? chase_right_avx2 : chase_right_scalar)(s, ld, l, l2, u, tau);
}
