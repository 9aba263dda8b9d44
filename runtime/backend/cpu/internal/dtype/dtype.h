// dtype.h: the weight decoders of the CPU kernels (matmul, gather and attend
// kernels.c include it; see dtype.go for the build cache). A row
// holds elements of one dtype, little-endian at any byte alignment (weights
// may sit in a memory-mapped file); Q8_0 is GGML's blocks of 32, each an f16
// scale then 32 int8. Decoding is exact but for Q8_0, whose value is one
// float32 product, scale times quant, on every path.
#ifndef ACTTAIL_DTYPE_H
#define ACTTAIL_DTYPE_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Element types; the values match model.DType.
enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_Q8_0 = 3 };

// ---- portable scalar path ----

static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline float from_bits(uint32_t u) {
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline float f16_to_f32(uint16_t h) {
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	if (exp == 0x1f) return from_bits(sign | 0x7f800000u | man << 13);
	if (exp == 0) { // zero or subnormal: man * 2^-24
		float f = (float)man * (1.0f / 16777216.0f);
		return sign ? -f : f;
	}
	return from_bits(sign | (exp + 112) << 23 | man << 13);
}

static inline float bf16_to_f32(uint16_t h) { return from_bits((uint32_t)h << 16); }

// decode_scalar writes elements [k0, k0+len) of one row to out as float32.
// For Q8_0, k0 and len are multiples of 32.
static inline void decode_scalar(int dt, const uint8_t *row, int64_t k0, int64_t len, float *out) {
	switch (dt) {
	case DT_F32:
		for (int64_t i = 0; i < len; i++) {
			const uint8_t *p = row + 4 * (k0 + i);
			out[i] = from_bits((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		}
		break;
	case DT_F16:
		for (int64_t i = 0; i < len; i++) out[i] = f16_to_f32(load_u16(row + 2 * (k0 + i)));
		break;
	case DT_BF16:
		for (int64_t i = 0; i < len; i++) out[i] = bf16_to_f32(load_u16(row + 2 * (k0 + i)));
		break;
	case DT_Q8_0:
		for (int64_t b = 0; b < len / 32; b++) {
			const uint8_t *blk = row + 34 * (k0 / 32 + b);
			float d = f16_to_f32(load_u16(blk));
			for (int j = 0; j < 32; j++) out[32 * b + j] = d * (float)(int8_t)blk[2 + j];
		}
		break;
	}
}

// ---- AVX2 + FMA + F16C path ----
//
// The functions carry a target attribute; the kernels pick them at start-up
// when have_avx2 says the CPU has the instructions.

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

// load8 converts elements i..i+7 of an F32, F16 or BF16 row to float32.
AVX2_INLINE __m256 load8(int dt, const uint8_t *row, int64_t i) {
	switch (dt) {
	case DT_F16:
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * i)));
	case DT_BF16:
		return _mm256_castsi256_ps(
		    _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * i))), 16));
	default:
		return _mm256_loadu_ps((const float *)(row + 4 * i));
	}
}

// hsum8 is the sum of the eight lanes of v.
AVX2_INLINE float hsum8(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// q8_8 converts 8 int8 quants at p to float32.
AVX2_INLINE __m256 q8_8(const uint8_t *p) {
	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

// decode_avx2 is decode_scalar, eight elements at a time.
AVX2 static inline void decode_avx2(int dt, const uint8_t *row, int64_t k0, int64_t len, float *out) {
	int64_t i = 0;
	switch (dt) {
	case DT_F32:
		memcpy(out, row + 4 * k0, 4 * len);
		return;
	case DT_F16:
	case DT_BF16:
		for (; i + 8 <= len; i += 8) _mm256_storeu_ps(out + i, load8(dt, row, k0 + i));
		break;
	case DT_Q8_0:
		for (int64_t b = 0; b < len / 32; b++) {
			const uint8_t *blk = row + 34 * (k0 / 32 + b);
			__m256 d = _mm256_set1_ps(_cvtsh_ss(load_u16(blk)));
			for (int j = 0; j < 32; j += 8) _mm256_storeu_ps(out + 32 * b + j, _mm256_mul_ps(d, q8_8(blk + 2 + j)));
		}
		return;
	}
	if (i < len) decode_scalar(dt, row, k0 + i, len - i, out + i);
}

static inline int have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#else
static inline int have_avx2(void) { return 0; }
#endif

#endif
