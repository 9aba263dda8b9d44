// drv.h declares the slice of the CUDA driver API this package uses, with
// its own ABI-compatible types so that no CUDA header is needed to build.
#ifndef ACTTAIL_DRV_H
#define ACTTAIL_DRV_H

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream, *CUevent, *CUgraph, *CUgraphExec;

// at_open dlopens lib (libcuda.so.1) and resolves every symbol. It returns
// 0 on success, 1 if the library is missing, 2 if a required symbol is
// missing; *what names the library error or the symbol.
int at_open(const char *lib, const char **what);
// at_has_graphs reports whether the optional stream-capture symbols exist.
int at_has_graphs(void);

CUresult at_cuInit(unsigned flags);
CUresult at_cuDriverGetVersion(int *v);
CUresult at_cuDeviceGetCount(int *n);
CUresult at_cuDeviceGet(CUdevice *d, int ordinal);
CUresult at_cuDeviceGetName(char *name, int len, CUdevice d);
CUresult at_cuDeviceTotalMem(size_t *bytes, CUdevice d);
CUresult at_cuDeviceGetAttribute(int *v, int attr, CUdevice d);
CUresult at_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d);
CUresult at_cuDevicePrimaryCtxRelease(CUdevice d);
CUresult at_cuCtxSetCurrent(CUcontext c);
CUresult at_cuCtxSynchronize(void);
CUresult at_cuStreamCreate(CUstream *s, unsigned flags);
CUresult at_cuStreamDestroy(CUstream s);
CUresult at_cuStreamSynchronize(CUstream s);
CUresult at_cuMemAlloc(CUdeviceptr *p, size_t bytes);
CUresult at_cuMemFree(CUdeviceptr p);
CUresult at_cuMemGetInfo(size_t *free, size_t *total);
CUresult at_cuMemAllocHost(void **p, size_t bytes);
CUresult at_cuMemFreeHost(void *p);
CUresult at_cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n);
CUresult at_cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n);
CUresult at_cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n);
CUresult at_cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n, CUstream s);
CUresult at_cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t n, CUstream s);
CUresult at_cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s);
CUresult at_cuMemsetD8(CUdeviceptr p, unsigned char v, size_t n);
CUresult at_cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s);
CUresult at_cuModuleLoadData(CUmodule *m, const void *image);
CUresult at_cuModuleUnload(CUmodule m);
CUresult at_cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name);
CUresult at_cuModuleGetGlobal(CUdeviceptr *p, size_t *bytes, CUmodule m, const char *name);
CUresult at_cuFuncSetAttribute(CUfunction f, int attr, int v);
CUresult at_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                           unsigned bz, unsigned shmem, CUstream s, void **args);
CUresult at_cuEventCreate(CUevent *e, unsigned flags);
CUresult at_cuEventDestroy(CUevent e);
CUresult at_cuEventRecord(CUevent e, CUstream s);
CUresult at_cuEventSynchronize(CUevent e);
CUresult at_cuEventElapsedTime(float *ms, CUevent start, CUevent end);
CUresult at_cuGetErrorName(CUresult r, const char **s);
CUresult at_cuGetErrorString(CUresult r, const char **s);
CUresult at_cuStreamBeginCapture(CUstream s, int mode);
CUresult at_cuStreamEndCapture(CUstream s, CUgraph *g);
CUresult at_cuGraphInstantiate(CUgraphExec *e, CUgraph g);
CUresult at_cuGraphLaunch(CUgraphExec e, CUstream s);
CUresult at_cuGraphExecDestroy(CUgraphExec e);
CUresult at_cuGraphDestroy(CUgraph g);
// at_cuGraphExecUpdate updates e in place from g (same topology); *result is
// the driver's CUgraphExecUpdateResult. 801 (not supported) without either
// driver entry point.
CUresult at_cuGraphExecUpdate(CUgraphExec e, CUgraph g, int *result);

#endif
