//go:build cgo

package gather

/*
#cgo CFLAGS: -O3 -std=gnu11
#cgo noescape ga_gather
#cgo nocallback ga_gather
#cgo noescape ga_dense
#cgo nocallback ga_dense
#include "gather_kernels.h"
*/
import "C"

import (
	"unsafe"

	// kernels.c includes its dtype.h: the import has the build cache see it.
	_ "github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/dtype"
)

// gatherCols computes dst[o0:o1] of Gather over the kept rows idx[r0:r1]
// (rows r0 … r1−1 when all is set) on the calling thread (kernels.c).
// Callers have checked shapes and indices.
func gatherCols(dst []float32, m *Matrix, x []float32, idx []int32, all bool, r0, r1, o0, o1 int) {
	var ip *C.int32_t
	t, xs := unsafe.Pointer(&m.t[0]), unsafe.Pointer(&x[0])
	switch {
	case r0 >= r1:
		clear(dst[o0:o1])
		return
	case all:
		t, xs = unsafe.Pointer(&m.t[r0*m.rowBytes]), unsafe.Pointer(&x[r0])
	default:
		ip = (*C.int32_t)(unsafe.Pointer(&idx[r0]))
	}
	C.ga_gather(C.int(m.DType), (*C.uint8_t)(t), C.int64_t(m.rowBytes), ip, C.int64_t(r1-r0),
		(*C.float)(xs), C.int64_t(o0), C.int64_t(o1), (*C.float)(unsafe.Pointer(&dst[0])))
}

// denseCols computes columns [o0, o1) of Dense for n > 1 rows on the
// calling thread.
func denseCols(dst []float32, m *Matrix, x []float32, n, o0, o1 int) {
	C.ga_dense(C.int(m.DType), (*C.uint8_t)(unsafe.Pointer(&m.t[0])), C.int64_t(m.rowBytes), C.int64_t(m.In),
		(*C.float)(unsafe.Pointer(&x[0])), C.int64_t(n), C.int64_t(o0), C.int64_t(o1),
		(*C.float)(unsafe.Pointer(&dst[0])), C.int64_t(m.Out))
}

// ISA names the instruction set the kernels use: "avx2" or "scalar".
func ISA() string { return isaNames[C.ga_isa()] }

var isaNames = [...]string{C.GA_SCALAR: "scalar", C.GA_AVX2: "avx2"}

// setISA selects the kernels by name for tests; it returns the name in
// use, which differs when the CPU lacks the one asked for.
func setISA(name string) string {
	for i, n := range isaNames {
		if n == name {
			C.ga_set_isa(C.int(i))
		}
	}
	return ISA()
}
