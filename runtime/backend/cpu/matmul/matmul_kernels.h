//go:build cgo

// Kernels behind package matmul; see kernels.c for layouts.
#ifndef ACTTAIL_MATMUL_KERNELS_H
#define ACTTAIL_MATMUL_KERNELS_H

#include <stdint.h>

// Instruction sets mm_rows may use.
enum { MM_SCALAR = 0, MM_AVX2 = 1 };

void mm_rows(int dtype, const uint8_t *w, int64_t rowbytes, int64_t rows, int64_t cols,
             const float *x, int64_t n, float *dst, int64_t ldd);
double mm_sum(const float *p, int64_t n);
int mm_isa(void);
int mm_set_isa(int isa);

#endif
