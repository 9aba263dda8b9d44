// blas.h declares the slice of cuBLAS this package uses (a handle bound to
// a stream, a workspace, GemmEx), opened at run time like the driver and
// never required. Types are ABI-compatible stand-ins: no CUDA header needed.
#ifndef ACTTAIL_BLAS_H
#define ACTTAIL_BLAS_H

#include <stddef.h>

#include "drv.h"

typedef int cublasStatus_t;
typedef void *cublasHandle_t;

// at_blas_open dlopens lib (libcublas.so.N) and resolves its symbols, as
// at_open does for the driver: 0 on success, 1 if the library is missing,
// 2 if a required symbol is missing (*what names it). Once one library is
// open, later calls return 0 without loading another.
int at_blas_open(const char *lib, const char **what);

cublasStatus_t at_cublasCreate(cublasHandle_t *h);
cublasStatus_t at_cublasDestroy(cublasHandle_t h);
cublasStatus_t at_cublasGetVersion(cublasHandle_t h, int *v);
cublasStatus_t at_cublasSetStream(cublasHandle_t h, CUstream s);
// at_cublasSetWorkspace returns 15 (CUBLAS_STATUS_NOT_SUPPORTED) when the
// library predates cublasSetWorkspace_v2 (CUDA < 11.4).
cublasStatus_t at_cublasSetWorkspace(cublasHandle_t h, CUdeviceptr p, size_t bytes);
// at_cublasGemmEx is cublasGemmEx with host scalars alpha and beta.
cublasStatus_t at_cublasGemmEx(cublasHandle_t h, int transa, int transb, int m, int n, int k, float alpha,
                               CUdeviceptr A, int atype, int lda, CUdeviceptr B, int btype, int ldb, float beta,
                               CUdeviceptr C, int ctype, int ldc, int compute, int algo);
// at_cublasStatusString is the library's name for s, or null when it has
// no cublasGetStatusString.
const char *at_cublasStatusString(cublasStatus_t s);

#endif
