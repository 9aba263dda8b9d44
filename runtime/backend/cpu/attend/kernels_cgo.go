//go:build cgo

package attend

/*
#cgo CFLAGS: -O3 -std=gnu11
#cgo LDFLAGS: -lm
#cgo noescape at_heads
#cgo nocallback at_heads
#include "attend_kernels.h"
*/
import "C"

import (
	"unsafe"

	// kernels.c includes its dtype.h: the import has the build cache see it.
	_ "github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/dtype"
)

// heads is Heads after the checks, in C (kernels.c).
func heads(out, q, kc, vc, scratch []float32, s Shape, lo, hi int) {
	f := func(p []float32) *C.float { return (*C.float)(unsafe.Pointer(&p[0])) }
	C.at_heads(f(q), f(kc), f(vc), f(out), f(scratch), C.int64_t(s.NHeads), C.int64_t(s.NHeads/s.NKVHeads),
		C.int64_t(s.HeadDim), C.int64_t(s.NKVHeads*s.HeadDim), C.int64_t(s.Pos0), C.int64_t(lo), C.int64_t(hi))
}

// ISA names the instruction set the kernels use: "avx2" or "scalar".
func ISA() string { return isaNames[C.at_isa()] }

var isaNames = [...]string{C.AT_SCALAR: "scalar", C.AT_AVX2: "avx2"}

// setISA selects the kernels by name for tests; it returns the name in
// use, which differs when the CPU lacks the one asked for.
func setISA(name string) string {
	for i, n := range isaNames {
		if n == name {
			C.at_set_isa(C.int(i))
		}
	}
	return ISA()
}
