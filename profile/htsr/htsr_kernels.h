//go:build cgo

// Kernels behind package htsr's eigenvalue route; see htsr_kernels.c.
#ifndef ACTTAIL_HTSR_KERNELS_H
#define ACTTAIL_HTSR_KERNELS_H

#include <stdint.h>

// Instruction sets the kernels may use.
enum { HTSR_SCALAR = 0, HTSR_AVX2 = 1 };

void htsr_gemm(int64_t i0, int64_t i1, int64_t n, int64_t k, double alpha, const double *x, int64_t ldx,
               const double *y, int64_t ldy, double *c, int64_t ldc, int upper);
void htsr_symm(int64_t i0, int64_t i1, int64_t m, int64_t nv, const double *a, int64_t lda, const double *v,
               int64_t ldv, double *z, double *zt, int64_t ldz);
void htsr_chase_left(double *s, int64_t ld, int64_t l, int64_t l2, const double *v, double tau, double *w);
void htsr_chase_right(double *s, int64_t ld, int64_t l, int64_t l2, const double *u, double tau);
int htsr_isa(void);
int htsr_set_isa(int isa);

#endif
