// drv.c resolves the CUDA driver API at run time (dlopen), so that binaries
// build and start on machines without a driver. Each at_ function calls
// through a pointer resolved by at_open; Go cannot call C function pointers.
#include "drv.h"

#include <dlfcn.h>

#define REQUIRED 1
#define OPTIONAL 0

// One entry per symbol: the pointer, and the ABI names to try in order.
#define SYMS(X)                                                                  \
  X(REQUIRED, cuInit, (unsigned), "cuInit", 0)                      \
  X(REQUIRED, cuDriverGetVersion, (int *), "cuDriverGetVersion", 0) \
  X(REQUIRED, cuDeviceGetCount, (int *), "cuDeviceGetCount", 0)     \
  X(REQUIRED, cuDeviceGet, (CUdevice *, int), "cuDeviceGet", 0)     \
  X(REQUIRED, cuDeviceGetName, (char *, int, CUdevice), "cuDeviceGetName", 0) \
  X(REQUIRED, cuDeviceTotalMem, (size_t *, CUdevice), "cuDeviceTotalMem_v2", 0) \
  X(REQUIRED, cuDeviceGetAttribute, (int *, int, CUdevice), "cuDeviceGetAttribute", 0) \
  X(REQUIRED, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice), "cuDevicePrimaryCtxRetain", 0) \
  X(REQUIRED, cuDevicePrimaryCtxRelease, (CUdevice), "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease") \
  X(REQUIRED, cuCtxSetCurrent, (CUcontext), "cuCtxSetCurrent", 0)   \
  X(REQUIRED, cuCtxSynchronize, (void), "cuCtxSynchronize", 0)      \
  X(REQUIRED, cuStreamCreate, (CUstream *, unsigned), "cuStreamCreate", 0) \
  X(REQUIRED, cuStreamDestroy, (CUstream), "cuStreamDestroy_v2", "cuStreamDestroy") \
  X(REQUIRED, cuStreamSynchronize, (CUstream), "cuStreamSynchronize", 0) \
  X(REQUIRED, cuMemAlloc, (CUdeviceptr *, size_t), "cuMemAlloc_v2", 0) \
  X(REQUIRED, cuMemFree, (CUdeviceptr), "cuMemFree_v2", 0)          \
  X(REQUIRED, cuMemGetInfo, (size_t *, size_t *), "cuMemGetInfo_v2", 0) \
  X(REQUIRED, cuMemAllocHost, (void **, size_t), "cuMemAllocHost_v2", 0) \
  X(REQUIRED, cuMemFreeHost, (void *), "cuMemFreeHost", 0) \
  X(REQUIRED, cuMemcpyHtoD, (CUdeviceptr, const void *, size_t), "cuMemcpyHtoD_v2", 0) \
  X(REQUIRED, cuMemcpyDtoH, (void *, CUdeviceptr, size_t), "cuMemcpyDtoH_v2", 0) \
  X(REQUIRED, cuMemcpyDtoD, (CUdeviceptr, CUdeviceptr, size_t), "cuMemcpyDtoD_v2", 0) \
  X(REQUIRED, cuMemcpyHtoDAsync, (CUdeviceptr, const void *, size_t, CUstream), "cuMemcpyHtoDAsync_v2", 0) \
  X(REQUIRED, cuMemcpyDtoHAsync, (void *, CUdeviceptr, size_t, CUstream), "cuMemcpyDtoHAsync_v2", 0) \
  X(REQUIRED, cuMemcpyDtoDAsync, (CUdeviceptr, CUdeviceptr, size_t, CUstream), "cuMemcpyDtoDAsync_v2", 0) \
  X(REQUIRED, cuMemsetD8, (CUdeviceptr, unsigned char, size_t), "cuMemsetD8_v2", 0) \
  X(REQUIRED, cuMemsetD8Async, (CUdeviceptr, unsigned char, size_t, CUstream), "cuMemsetD8Async", 0) \
  X(REQUIRED, cuModuleLoadData, (CUmodule *, const void *), "cuModuleLoadData", 0) \
  X(REQUIRED, cuModuleUnload, (CUmodule), "cuModuleUnload", 0)      \
  X(REQUIRED, cuModuleGetFunction, (CUfunction *, CUmodule, const char *), "cuModuleGetFunction", 0) \
  X(REQUIRED, cuModuleGetGlobal, (CUdeviceptr *, size_t *, CUmodule, const char *), "cuModuleGetGlobal_v2", 0) \
  X(REQUIRED, cuFuncSetAttribute, (CUfunction, int, int), "cuFuncSetAttribute", 0) \
  X(REQUIRED, cuLaunchKernel, (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **), "cuLaunchKernel", 0) \
  X(REQUIRED, cuEventCreate, (CUevent *, unsigned), "cuEventCreate", 0) \
  X(REQUIRED, cuEventDestroy, (CUevent), "cuEventDestroy_v2", "cuEventDestroy") \
  X(REQUIRED, cuEventRecord, (CUevent, CUstream), "cuEventRecord", 0) \
  X(REQUIRED, cuEventSynchronize, (CUevent), "cuEventSynchronize", 0) \
  X(REQUIRED, cuEventElapsedTime, (float *, CUevent, CUevent), "cuEventElapsedTime_v2", "cuEventElapsedTime") \
  X(REQUIRED, cuGetErrorName, (CUresult, const char **), "cuGetErrorName", 0) \
  X(REQUIRED, cuGetErrorString, (CUresult, const char **), "cuGetErrorString", 0) \
  X(OPTIONAL, cuStreamBeginCapture, (CUstream, int), "cuStreamBeginCapture_v2", "cuStreamBeginCapture") \
  X(OPTIONAL, cuStreamEndCapture, (CUstream, CUgraph *), "cuStreamEndCapture", 0) \
  X(OPTIONAL, cuGraphInstantiateWithFlags, (CUgraphExec *, CUgraph, unsigned long long), "cuGraphInstantiateWithFlags", 0) \
  X(OPTIONAL, cuGraphLaunch, (CUgraphExec, CUstream), "cuGraphLaunch", 0) \
  X(OPTIONAL, cuGraphExecDestroy, (CUgraphExec), "cuGraphExecDestroy", 0) \
  X(OPTIONAL, cuGraphDestroy, (CUgraph), "cuGraphDestroy", 0) \
  X(OPTIONAL, cuGraphExecUpdate_v2, (CUgraphExec, CUgraph, void *), "cuGraphExecUpdate_v2", 0) \
  X(OPTIONAL, cuGraphExecUpdate, (CUgraphExec, CUgraph, void **, int *), "cuGraphExecUpdate", 0)

#define DECLARE(req, name, args, a, b) static CUresult(*p_##name) args;
SYMS(DECLARE)

static void *resolve(void *lib, const char *a, const char *b) {
  void *p = dlsym(lib, a);
  if (!p && b) p = dlsym(lib, b);
  return p;
}

int at_open(const char *name, const char **what) {
  void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    *what = dlerror();
    return 1;
  }
#define RESOLVE(req, name, args, a, b)    \
  p_##name = (CUresult(*) args)resolve(lib, a, b); \
  if (req && !p_##name) {                 \
    *what = a;                            \
    return 2;                             \
  }
  SYMS(RESOLVE)
  return 0;
}

int at_has_graphs(void) {
  return p_cuStreamBeginCapture && p_cuStreamEndCapture && p_cuGraphInstantiateWithFlags && p_cuGraphLaunch &&
         p_cuGraphExecDestroy && p_cuGraphDestroy;
}

CUresult at_cuInit(unsigned f) { return p_cuInit(f); }
CUresult at_cuDriverGetVersion(int *v) { return p_cuDriverGetVersion(v); }
CUresult at_cuDeviceGetCount(int *n) { return p_cuDeviceGetCount(n); }
CUresult at_cuDeviceGet(CUdevice *d, int o) { return p_cuDeviceGet(d, o); }
CUresult at_cuDeviceGetName(char *n, int l, CUdevice d) { return p_cuDeviceGetName(n, l, d); }
CUresult at_cuDeviceTotalMem(size_t *b, CUdevice d) { return p_cuDeviceTotalMem(b, d); }
CUresult at_cuDeviceGetAttribute(int *v, int a, CUdevice d) { return p_cuDeviceGetAttribute(v, a, d); }
CUresult at_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { return p_cuDevicePrimaryCtxRetain(c, d); }
CUresult at_cuDevicePrimaryCtxRelease(CUdevice d) { return p_cuDevicePrimaryCtxRelease(d); }
CUresult at_cuCtxSetCurrent(CUcontext c) { return p_cuCtxSetCurrent(c); }
CUresult at_cuCtxSynchronize(void) { return p_cuCtxSynchronize(); }
CUresult at_cuStreamCreate(CUstream *s, unsigned f) { return p_cuStreamCreate(s, f); }
CUresult at_cuStreamDestroy(CUstream s) { return p_cuStreamDestroy(s); }
CUresult at_cuStreamSynchronize(CUstream s) { return p_cuStreamSynchronize(s); }
CUresult at_cuMemAlloc(CUdeviceptr *p, size_t n) { return p_cuMemAlloc(p, n); }
CUresult at_cuMemFree(CUdeviceptr p) { return p_cuMemFree(p); }
CUresult at_cuMemGetInfo(size_t *f, size_t *t) { return p_cuMemGetInfo(f, t); }
CUresult at_cuMemAllocHost(void **p, size_t n) { return p_cuMemAllocHost(p, n); }
CUresult at_cuMemFreeHost(void *p) { return p_cuMemFreeHost(p); }
CUresult at_cuMemcpyHtoD(CUdeviceptr d, const void *s, size_t n) { return p_cuMemcpyHtoD(d, s, n); }
CUresult at_cuMemcpyDtoH(void *d, CUdeviceptr s, size_t n) { return p_cuMemcpyDtoH(d, s, n); }
CUresult at_cuMemcpyDtoD(CUdeviceptr d, CUdeviceptr s, size_t n) { return p_cuMemcpyDtoD(d, s, n); }
CUresult at_cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, CUstream st) { return p_cuMemcpyHtoDAsync(d, s, n, st); }
CUresult at_cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, CUstream st) { return p_cuMemcpyDtoHAsync(d, s, n, st); }
CUresult at_cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) { return p_cuMemcpyDtoDAsync(d, s, n, st); }
CUresult at_cuMemsetD8(CUdeviceptr p, unsigned char v, size_t n) { return p_cuMemsetD8(p, v, n); }
CUresult at_cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s) { return p_cuMemsetD8Async(p, v, n, s); }
CUresult at_cuModuleLoadData(CUmodule *m, const void *img) { return p_cuModuleLoadData(m, img); }
CUresult at_cuModuleUnload(CUmodule m) { return p_cuModuleUnload(m); }
CUresult at_cuModuleGetFunction(CUfunction *f, CUmodule m, const char *n) { return p_cuModuleGetFunction(f, m, n); }
CUresult at_cuModuleGetGlobal(CUdeviceptr *p, size_t *b, CUmodule m, const char *n) { return p_cuModuleGetGlobal(p, b, m, n); }
CUresult at_cuFuncSetAttribute(CUfunction f, int a, int v) { return p_cuFuncSetAttribute(f, a, v); }
CUresult at_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                           unsigned sh, CUstream s, void **args) {
  return p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, args, 0);
}
CUresult at_cuEventCreate(CUevent *e, unsigned f) { return p_cuEventCreate(e, f); }
CUresult at_cuEventDestroy(CUevent e) { return p_cuEventDestroy(e); }
CUresult at_cuEventRecord(CUevent e, CUstream s) { return p_cuEventRecord(e, s); }
CUresult at_cuEventSynchronize(CUevent e) { return p_cuEventSynchronize(e); }
CUresult at_cuEventElapsedTime(float *ms, CUevent a, CUevent b) { return p_cuEventElapsedTime(ms, a, b); }
CUresult at_cuGetErrorName(CUresult r, const char **s) { return p_cuGetErrorName(r, s); }
CUresult at_cuGetErrorString(CUresult r, const char **s) { return p_cuGetErrorString(r, s); }
CUresult at_cuStreamBeginCapture(CUstream s, int mode) { return p_cuStreamBeginCapture(s, mode); }
CUresult at_cuStreamEndCapture(CUstream s, CUgraph *g) { return p_cuStreamEndCapture(s, g); }
CUresult at_cuGraphInstantiate(CUgraphExec *e, CUgraph g) { return p_cuGraphInstantiateWithFlags(e, g, 0); }
CUresult at_cuGraphLaunch(CUgraphExec e, CUstream s) { return p_cuGraphLaunch(e, s); }
CUresult at_cuGraphExecDestroy(CUgraphExec e) { return p_cuGraphExecDestroy(e); }
CUresult at_cuGraphDestroy(CUgraph g) { return p_cuGraphDestroy(g); }

// CUDA 12 renamed cuGraphExecUpdate to _v2 with a result struct
// (CUgraphExecUpdateResultInfo: result, errorNode, errorFromNode); CUDA 11
// drivers have only the first form.
CUresult at_cuGraphExecUpdate(CUgraphExec e, CUgraph g, int *result) {
  *result = 0;
  if (p_cuGraphExecUpdate_v2) {
    struct {
      int result;
      void *errorNode, *errorFromNode;
    } info = {0, 0, 0};
    CUresult r = p_cuGraphExecUpdate_v2(e, g, &info);
    *result = info.result;
    return r;
  }
  if (p_cuGraphExecUpdate) {
    void *node = 0;
    return p_cuGraphExecUpdate(e, g, &node, result);
  }
  return 801;  // CUDA_ERROR_NOT_SUPPORTED
}
