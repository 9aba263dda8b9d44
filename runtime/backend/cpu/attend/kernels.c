//go:build cgo

// Attention for package attend. Layout: q and out are rows of nheads ×
// headdim; the caches kc and vc are rows of kvdim = nkvheads × headdim, one
// a position; query head h reads cache head h / group. Job j = r·nheads + h
// attends row r (position pos0 + r) over positions 0 … pos0 + r: scores
// into scratch, a softmax, then the weighted sum of the value rows.
//
// The AVX2+FMA path (picked at start-up, as in the matmul and gather
// kernels) does the dots and the weighted sum eight lanes at a time and
// the exponentials with a polynomial (Cephes' expf: relative error about
// 2e-7 on the range used; inputs below -87 give about 0, as expf's
// 1.6e-38 would be next to the 1 of the largest score). All float32.
#include "attend_kernels.h"

#include <math.h>

#include "../internal/dtype/dtype.h"

// ---- portable scalar path ----

static void head_scalar(const float *q, const float *k, const float *v, int64_t n, int64_t hd, int64_t ld,
                        float scale, float *sc, float *o) {
	float m = -INFINITY;
	for (int64_t t = 0; t < n; t++) {
		const float *kt = k + t * ld;
		float s = 0;
		for (int64_t i = 0; i < hd; i++) s += q[i] * kt[i];
		sc[t] = s * scale;
		if (sc[t] > m) m = sc[t];
	}
	float sum = 0;
	for (int64_t t = 0; t < n; t++) {
		sc[t] = expf(sc[t] - m);
		sum += sc[t];
	}
	float inv = 1 / sum;
	for (int64_t i = 0; i < hd; i++) o[i] = 0;
	for (int64_t t = 0; t < n; t++) {
		const float *vt = v + t * ld;
		float a = sc[t] * inv;
		for (int64_t i = 0; i < hd; i++) o[i] += a * vt[i];
	}
}

// ---- AVX2 + FMA path ----

#if defined(__x86_64__)
// exp8 is expf of eight lanes (see the file comment).
AVX2_INLINE __m256 exp8(__m256 x) {
	x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
	                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x); // x − n·ln2, in two parts
	x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
	__m256 y = _mm256_set1_ps(1.9875691500e-4f);
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
	y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// head_avx2 is head_scalar for headdim a multiple of 8.
AVX2 static void head_avx2(const float *q, const float *k, const float *v, int64_t n, int64_t hd, int64_t ld,
                           float scale, float *sc, float *o) {
	__m256 mv = _mm256_set1_ps(-INFINITY);
	for (int64_t t = 0; t < n; t++) {
		const float *kt = k + t * ld;
		__m256 a0 = _mm256_setzero_ps(), a1 = a0;
		int64_t i = 0;
		for (; i + 16 <= hd; i += 16) {
			a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(kt + i), a0);
			a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(kt + i + 8), a1);
		}
		if (i < hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(kt + i), a0);
		sc[t] = hsum8(_mm256_add_ps(a0, a1)) * scale;
		mv = _mm256_max_ps(mv, _mm256_set1_ps(sc[t]));
	}
	__m256 sum = _mm256_setzero_ps();
	int64_t t = 0;
	for (; t + 8 <= n; t += 8) {
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + t), mv));
		_mm256_storeu_ps(sc + t, e);
		sum = _mm256_add_ps(sum, e);
	}
	float tot = hsum8(sum), m = _mm256_cvtss_f32(mv);
	for (; t < n; t++) {
		float e[8] = {sc[t] - m};
		_mm256_storeu_ps(e, exp8(_mm256_loadu_ps(e)));
		sc[t] = e[0];
		tot += e[0];
	}
	__m256 inv = _mm256_set1_ps(1 / tot);
	int64_t i = 0;
	for (; i + 64 <= hd; i += 64) { // 64 lanes of the sum in registers, one pass over the values
		__m256 acc[8];
		for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
		for (int64_t u = 0; u < n; u++) {
			__m256 a = _mm256_set1_ps(sc[u]);
			const float *vu = v + u * ld + i;
			for (int c = 0; c < 8; c++) acc[c] = _mm256_fmadd_ps(a, _mm256_loadu_ps(vu + 8 * c), acc[c]);
		}
		for (int c = 0; c < 8; c++) _mm256_storeu_ps(o + i + 8 * c, _mm256_mul_ps(acc[c], inv));
	}
	for (; i < hd; i += 8) {
		__m256 acc = _mm256_setzero_ps();
		for (int64_t u = 0; u < n; u++) acc = _mm256_fmadd_ps(_mm256_set1_ps(sc[u]), _mm256_loadu_ps(v + u * ld + i), acc);
		_mm256_storeu_ps(o + i, _mm256_mul_ps(acc, inv));
	}
}
#endif

// ---- dispatch ----

typedef void head_fn(const float *q, const float *k, const float *v, int64_t n, int64_t hd, int64_t ld, float scale,
                     float *sc, float *o);

static int isa;

int at_isa(void) { return isa; }

// at_set_isa selects an instruction set (for tests); it returns the one in
// use, which stays unchanged if the CPU lacks the one asked for.
int at_set_isa(int want) {
	if (want == AT_SCALAR || (want == AT_AVX2 && have_avx2())) isa = want;
	return isa;
}

__attribute__((constructor)) static void pick_isa(void) { at_set_isa(AT_AVX2); }

void at_heads(const float *q, const float *kc, const float *vc, float *out, float *scratch, int64_t nheads,
              int64_t group, int64_t headdim, int64_t kvdim, int64_t pos0, int64_t lo, int64_t hi) {
	head_fn *fn = head_scalar;
#if defined(__x86_64__)
	if (isa == AT_AVX2 && headdim % 8 == 0) fn = head_avx2;
#endif
	float scale = 1 / sqrtf((float)headdim);
	for (int64_t j = lo; j < hi; j++) {
		int64_t r = j / nheads, h = j % nheads, off = (h / group) * headdim;
		fn(q + j * headdim, kc + off, vc + off, pos0 + r + 1, headdim, kvdim, scale, scratch, out + j * headdim);
	}
}
