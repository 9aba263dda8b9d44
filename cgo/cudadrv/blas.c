// blas.c resolves cuBLAS at run time (dlopen), like drv.c the driver.
#include "blas.h"

#include <dlfcn.h>

#define REQUIRED 1
#define OPTIONAL 0

#define BLAS_SYMS(X)                                                                                             \
  X(REQUIRED, cublasStatus_t, cublasCreate, (cublasHandle_t *), "cublasCreate_v2")                              \
  X(REQUIRED, cublasStatus_t, cublasDestroy, (cublasHandle_t), "cublasDestroy_v2")                              \
  X(REQUIRED, cublasStatus_t, cublasGetVersion, (cublasHandle_t, int *), "cublasGetVersion_v2")                 \
  X(REQUIRED, cublasStatus_t, cublasSetStream, (cublasHandle_t, CUstream), "cublasSetStream_v2")                \
  X(REQUIRED, cublasStatus_t, cublasGemmEx,                                                                     \
    (cublasHandle_t, int, int, int, int, int, const void *, const void *, int, int, const void *, int, int,     \
     const void *, void *, int, int, int, int),                                                                 \
    "cublasGemmEx")                                                                                             \
  X(OPTIONAL, cublasStatus_t, cublasSetWorkspace, (cublasHandle_t, void *, size_t), "cublasSetWorkspace_v2")    \
  X(OPTIONAL, const char *, cublasGetStatusString, (cublasStatus_t), "cublasGetStatusString")

#define DECLARE(req, ret, name, args, sym) static ret(*p_##name) args;
BLAS_SYMS(DECLARE)

static void *blas_lib;

int at_blas_open(const char *name, const char **what) {
  if (blas_lib) return 0;
  void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    *what = dlerror();
    return 1;
  }
#define RESOLVE(req, ret, name, args, sym) \
  p_##name = (ret(*) args)dlsym(lib, sym);  \
  if (req && !p_##name) {                   \
    *what = sym;                            \
    dlclose(lib);                           \
    return 2;                               \
  }
  BLAS_SYMS(RESOLVE)
  blas_lib = lib;
  return 0;
}

cublasStatus_t at_cublasCreate(cublasHandle_t *h) { return p_cublasCreate(h); }
cublasStatus_t at_cublasDestroy(cublasHandle_t h) { return p_cublasDestroy(h); }
cublasStatus_t at_cublasGetVersion(cublasHandle_t h, int *v) { return p_cublasGetVersion(h, v); }
cublasStatus_t at_cublasSetStream(cublasHandle_t h, CUstream s) { return p_cublasSetStream(h, s); }
cublasStatus_t at_cublasSetWorkspace(cublasHandle_t h, CUdeviceptr p, size_t bytes) {
  if (!p_cublasSetWorkspace) return 15;
  return p_cublasSetWorkspace(h, (void *)p, bytes);
}
cublasStatus_t at_cublasGemmEx(cublasHandle_t h, int transa, int transb, int m, int n, int k, float alpha,
                               CUdeviceptr A, int atype, int lda, CUdeviceptr B, int btype, int ldb, float beta,
                               CUdeviceptr C, int ctype, int ldc, int compute, int algo) {
  return p_cublasGemmEx(h, transa, transb, m, n, k, &alpha, (const void *)A, atype, lda, (const void *)B, btype, ldb,
                        &beta, (void *)C, ctype, ldc, compute, algo);
}
const char *at_cublasStatusString(cublasStatus_t s) {
  return p_cublasGetStatusString ? p_cublasGetStatusString(s) : 0;
}
