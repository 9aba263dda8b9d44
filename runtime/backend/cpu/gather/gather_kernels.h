//go:build cgo

// Kernels behind package gather; see kernels.c for layouts. The file name
// is unique because cgo's gcc probes run outside this folder, where a stray
// kernels.h (e.g. one in /tmp) would shadow a header of that name.
#ifndef ACTTAIL_GATHER_KERNELS_H
#define ACTTAIL_GATHER_KERNELS_H

#include <stdint.h>

// Instruction sets the kernels may use.
enum { GA_SCALAR = 0, GA_AVX2 = 1 };

void ga_gather(int dtype, const uint8_t *t, int64_t rowbytes, const int32_t *idx, int64_t nrows, const float *x,
               int64_t c0, int64_t c1, float *y);
void ga_dense(int dtype, const uint8_t *t, int64_t rowbytes, int64_t in, const float *x, int64_t n, int64_t c0,
              int64_t c1, float *y, int64_t ldy);
int ga_isa(void);
int ga_set_isa(int isa);

#endif
