//go:build cgo

package matmul

/*
#cgo CFLAGS: -O3 -std=gnu11
#cgo noescape mm_rows
#cgo nocallback mm_rows
#cgo noescape mm_sum
#cgo nocallback mm_sum
#include "matmul_kernels.h"
*/
import "C"

import (
	"unsafe"

	// kernels.c includes its dtype.h: the import has the build cache see it.
	_ "github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/dtype"
)

// mulRows computes output rows [o0, o1) of m·x on the calling thread
// (kernels.c). Callers have checked the shapes and that o0 < o1.
func mulRows(dst []float32, m *Matrix, x []float32, n, o0, o1 int) {
	C.mm_rows(C.int(m.DType),
		(*C.uint8_t)(unsafe.Pointer(&m.Data[o0*m.rowBytes])), C.int64_t(m.rowBytes),
		C.int64_t(o1-o0), C.int64_t(m.Cols),
		(*C.float)(unsafe.Pointer(&x[0])), C.int64_t(n),
		(*C.float)(unsafe.Pointer(&dst[o0])), C.int64_t(m.Rows))
}

// sum adds up p; MemReadBandwidth reads memory with it.
func sum(p []float32) float64 {
	if len(p) == 0 {
		return 0
	}
	return float64(C.mm_sum((*C.float)(unsafe.Pointer(&p[0])), C.int64_t(len(p))))
}

// ISA names the instruction set the kernels use: "avx2" or "scalar".
func ISA() string { return isaNames[C.mm_isa()] }

var isaNames = [...]string{C.MM_SCALAR: "scalar", C.MM_AVX2: "avx2"}

// setISA selects the kernels by name for tests; it returns the name in
// use, which differs when the CPU lacks the one asked for.
func setISA(name string) string {
	for i, n := range isaNames {
		if n == name {
			C.mm_set_isa(C.int(i))
		}
	}
	return ISA()
}
