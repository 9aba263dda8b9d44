package cudadrv

/*
#include <stdlib.h>
#include "blas.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"unsafe"
)

// ErrNoBLAS means no usable cuBLAS was found. cuBLAS is optional: callers
// fall back to their own kernels.
var ErrNoBLAS = errors.New("cuda: no cuBLAS")

// BLASError is a failed cuBLAS call.
type BLASError struct {
	Op     string // the cuBLAS function
	Status int    // the cublasStatus_t
	Name   string // e.g. CUBLAS_STATUS_NOT_INITIALIZED
}

func (e *BLASError) Error() string {
	return fmt.Sprintf("cublas: %s: %s (%d)", e.Op, e.Name, e.Status)
}

// blasStatusNames are the cublasStatus_t values (cublas_api.h), for
// libraries without cublasGetStatusString.
var blasStatusNames = map[int]string{
	1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
	8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func checkBLAS(op string, s C.cublasStatus_t) error {
	if s == 0 {
		return nil
	}
	e := &BLASError{Op: op, Status: int(s), Name: blasStatusNames[int(s)]}
	if p := C.at_cublasStatusString(s); p != nil {
		e.Name = C.GoString(p)
	}
	if e.Name == "" {
		e.Name = "CUBLAS_STATUS_UNKNOWN"
	}
	return e
}

// DataType is a cudaDataType_t (library_types.h) of a GEMM input.
type DataType int

// The input types Gemm takes.
const (
	R32F  DataType = 0
	R16F  DataType = 2
	R16BF DataType = 14
)

// BLASEnv names a cuBLAS library to load instead of the search of
// BLASLibraries.
const BLASEnv = "ACTTAIL_LIBCUBLAS"

// BLASLibraries is where OpenBLAS looks for cuBLAS, in order: BLASEnv when
// set; else the sonames of CUDA 13, 12 and 11 on the loader's path, then
// in the toolkit's default directory. With ACTTAIL_LIBCUDA set (another
// driver library, such as the emulator) only BLASEnv is tried: a system
// cuBLAS would talk to the system driver.
func BLASLibraries() []string {
	if p := os.Getenv(BLASEnv); p != "" {
		return []string{p}
	}
	if os.Getenv("ACTTAIL_LIBCUDA") != "" {
		return nil
	}
	var libs []string
	for _, dir := range []string{"", "/usr/local/cuda/lib64"} {
		for _, v := range []string{"13", "12", "11"} {
			libs = append(libs, filepath.Join(dir, "libcublas.so."+v))
		}
	}
	return libs
}

var (
	blasOnce sync.Once
	blasLib  string
	blasErr  error
)

// loadBLAS opens the first library of BLASLibraries that has every symbol,
// once per process.
func loadBLAS() (string, error) {
	blasOnce.Do(func() {
		libs := BLASLibraries()
		if len(libs) == 0 {
			blasErr = fmt.Errorf("%w: ACTTAIL_LIBCUDA is set, so only %s names one", ErrNoBLAS, BLASEnv)
			return
		}
		var errs []string
		for _, lib := range libs {
			name := C.CString(lib)
			var what *C.char
			r := C.at_blas_open(name, &what)
			C.free(unsafe.Pointer(name))
			switch r {
			case 0:
				blasLib = lib
				return
			case 1:
				errs = append(errs, C.GoString(what))
			default:
				errs = append(errs, fmt.Sprintf("%s lacks %s", lib, C.GoString(what)))
			}
		}
		blasErr = fmt.Errorf("%w: %s", ErrNoBLAS, errs[0])
		if len(errs) > 1 {
			blasErr = fmt.Errorf("%w: tried %d libraries; first: %s", ErrNoBLAS, len(errs), errs[0])
		}
	})
	return blasLib, blasErr
}

// BLAS is a cuBLAS handle on one stream. It has a workspace of its own, so
// that its calls can be captured into CUDA graphs (cuBLAS may not allocate
// during a capture). Like a *Ctx, it is used only on the device thread.
type BLAS struct {
	h       C.cublasHandle_t
	ws      DevicePtr
	Version int    // cublasGetVersion: major·10000 + minor·100 + patch, e.g. 111103 for 11.11.3
	Library string // the library opened
}

// String is e.g. "cuBLAS 12.4.5 (libcublas.so.12)".
func (b *BLAS) String() string {
	v := b.Version
	return fmt.Sprintf("cuBLAS %d.%d.%d (%s)", v/10000, v/100%100, v%100, filepath.Base(b.Library))
}

// blasWorkspace is the handle's workspace: NVIDIA's recommendation for
// Hopper (32 MiB), more than earlier GPUs use.
const blasWorkspace = 32 << 20

// OpenBLAS loads cuBLAS (BLASLibraries, once per process) and creates a
// handle whose work goes to s. Without a library it returns an error
// wrapping ErrNoBLAS; a library that cannot start on this driver (too new)
// fails at cublasCreate with a BLASError.
func (c *Ctx) OpenBLAS(s Stream) (*BLAS, error) {
	lib, err := loadBLAS()
	if err != nil {
		return nil, err
	}
	b := &BLAS{Library: lib}
	if err := checkBLAS("cublasCreate_v2", C.at_cublasCreate(&b.h)); err != nil {
		return nil, fmt.Errorf("%s: %w", lib, err)
	}
	var v C.int
	err = errors.Join(
		checkBLAS("cublasGetVersion_v2", C.at_cublasGetVersion(b.h, &v)),
		checkBLAS("cublasSetStream_v2", C.at_cublasSetStream(b.h, s.h)))
	if err == nil {
		b.ws, err = c.MemAlloc(blasWorkspace)
	}
	if err == nil {
		err = checkBLAS("cublasSetWorkspace_v2", C.at_cublasSetWorkspace(b.h, C.CUdeviceptr(b.ws), blasWorkspace))
	}
	if err != nil {
		return nil, errors.Join(err, c.CloseBLAS(b))
	}
	b.Version = int(v)
	return b, nil
}

// CloseBLAS destroys the handle and frees its workspace.
func (c *Ctx) CloseBLAS(b *BLAS) error {
	if b == nil || b.h == nil {
		return nil
	}
	err := checkBLAS("cublasDestroy_v2", C.at_cublasDestroy(b.h))
	if b.ws != 0 {
		err = errors.Join(err, c.MemFree(b.ws))
	}
	*b = BLAS{}
	return err
}

// GEMM is one call of Gemm, in cuBLAS's column-major terms:
// C = Alpha·op(A)·op(B) + Beta·C, op(A) M×K, op(B) K×N, C M×N in float32;
// A and B of type AB (read as TransA/TransB say), accumulated in float32.
type GEMM struct {
	TransA, TransB bool
	M, N, K        int
	AB             DataType
	A, B, C        DevicePtr
	LdA, LdB, LdC  int
	Alpha, Beta    float32
}

func (g GEMM) check() error {
	rowsA, rowsB := g.M, g.K
	if g.TransA {
		rowsA = g.K
	}
	if g.TransB {
		rowsB = g.N
	}
	switch {
	case g.M <= 0 || g.N <= 0 || g.K <= 0:
		return fmt.Errorf("gemm %dx%dx%d: sizes must be positive", g.M, g.N, g.K)
	case g.M > math.MaxInt32 || g.N > math.MaxInt32 || g.K > math.MaxInt32:
		return fmt.Errorf("gemm %dx%dx%d: sizes exceed int32", g.M, g.N, g.K)
	case g.LdA < rowsA || g.LdB < rowsB || g.LdC < g.M:
		return fmt.Errorf("gemm %dx%dx%d: leading dimensions %d, %d, %d below %d, %d, %d", g.M, g.N, g.K, g.LdA, g.LdB, g.LdC, rowsA, rowsB, g.M)
	case g.AB != R32F && g.AB != R16F && g.AB != R16BF:
		return fmt.Errorf("gemm: input type %d not supported", g.AB)
	case g.A == 0 || g.B == 0 || g.C == 0:
		return fmt.Errorf("gemm: null matrix")
	}
	return nil
}

// Gemm queues g on the handle's stream (CUBLAS_COMPUTE_32F: fp32 inputs
// are multiplied in full fp32, not TF32). During a dry run (BeginDry) it
// only adds g to the hash.
func (c *Ctx) Gemm(b *BLAS, g GEMM) error {
	if err := g.check(); err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("gemm: %w: no handle", ErrNoBLAS)
	}
	if c.dry {
		c.fold(5, uint64(uintptr(unsafe.Pointer(b.h))), uint64(boolBit(g.TransA)), uint64(boolBit(g.TransB)),
			uint64(g.M), uint64(g.N), uint64(g.K), uint64(g.AB), uint64(g.A), uint64(g.B), uint64(g.C),
			uint64(g.LdA), uint64(g.LdB), uint64(g.LdC), uint64(math.Float32bits(g.Alpha)), uint64(math.Float32bits(g.Beta)))
		return nil
	}
	if b.h == nil {
		return fmt.Errorf("gemm: %w: handle closed", ErrNoBLAS)
	}
	const computeF32, algoDefault = 68, -1 // CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT
	r := C.at_cublasGemmEx(b.h, C.int(boolBit(g.TransA)), C.int(boolBit(g.TransB)), C.int(g.M), C.int(g.N), C.int(g.K),
		C.float(g.Alpha), C.CUdeviceptr(g.A), C.int(g.AB), C.int(g.LdA), C.CUdeviceptr(g.B), C.int(g.AB), C.int(g.LdB),
		C.float(g.Beta), C.CUdeviceptr(g.C), C.int(R32F), C.int(g.LdC), computeF32, algoDefault)
	if err := checkBLAS("cublasGemmEx", r); err != nil {
		return fmt.Errorf("%w (m=%d n=%d k=%d type %d)", err, g.M, g.N, g.K, g.AB)
	}
	return nil
}

func boolBit(v bool) int {
	if v {
		return 1
	}
	return 0
}
