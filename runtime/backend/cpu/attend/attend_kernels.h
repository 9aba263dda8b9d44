//go:build cgo

// Kernels behind package attend; see kernels.c.
#ifndef ACTTAIL_ATTEND_KERNELS_H
#define ACTTAIL_ATTEND_KERNELS_H

#include <stdint.h>

// Instruction sets the kernels may use.
enum { AT_SCALAR = 0, AT_AVX2 = 1 };

void at_heads(const float *q, const float *kc, const float *vc, float *out, float *scratch, int64_t nheads,
              int64_t group, int64_t headdim, int64_t kvdim, int64_t pos0, int64_t lo, int64_t hi);
int at_isa(void);
int at_set_isa(int isa);

#endif
