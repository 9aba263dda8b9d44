//go:build cgo

package htsr

/*
#cgo CFLAGS: -O3 -std=gnu11
#cgo noescape htsr_gemm
#cgo nocallback htsr_gemm
#cgo noescape htsr_symm
#cgo nocallback htsr_symm
#cgo noescape htsr_chase_left
#cgo nocallback htsr_chase_left
#cgo noescape htsr_chase_right
#cgo nocallback htsr_chase_right
#include "htsr_kernels.h"
*/
import "C"

import "unsafe"

// gemmRows adds alpha·X·Yᵀ to rows [i0, i1) of the n-column c on the
// calling thread (htsr_kernels.c); with upper, tiles wholly below the
// diagonal are skipped. X and Y have k columns. Callers have checked the
// shapes and that i0 < i1.
func gemmRows(i0, i1, n, k int, alpha float64, x []float64, ldx int, y []float64, ldy int, c []float64, ldc int, upper bool) {
	u := C.int(0)
	if upper {
		u = 1
	}
	C.htsr_gemm(C.int64_t(i0), C.int64_t(i1), C.int64_t(n), C.int64_t(k), C.double(alpha),
		(*C.double)(unsafe.Pointer(&x[0])), C.int64_t(ldx),
		(*C.double)(unsafe.Pointer(&y[0])), C.int64_t(ldy),
		(*C.double)(unsafe.Pointer(&c[0])), C.int64_t(ldc), u)
}

// symmRows computes the share of rows [i0, i1) of the upper triangle in
// A·V, for the symmetric m×m A held in the upper triangle of a and the
// m×nv v, on the calling thread (htsr_kernels.c): it sets rows [i0, i1) of
// z and adds to rows after i0 of zt. Callers have checked the shapes and
// that i0 < i1.
func symmRows(i0, i1, m, nv int, a []float64, lda int, v []float64, ldv int, z, zt []float64, ldz int) {
	C.htsr_symm(C.int64_t(i0), C.int64_t(i1), C.int64_t(m), C.int64_t(nv),
		(*C.double)(unsafe.Pointer(&a[0])), C.int64_t(lda),
		(*C.double)(unsafe.Pointer(&v[0])), C.int64_t(ldv),
		(*C.double)(unsafe.Pointer(&z[0])), (*C.double)(unsafe.Pointer(&zt[0])), C.int64_t(ldz))
}

// chaseLeft replaces the diagonal block D = S[j:j+l, j:j+l] of the band
// matrix by H·D·H and the block B = S[j:j+l, j+l:j+l+l2] right of it by
// H·B, for H = I − τ·v·vᵀ (htsr_kernels.c). s starts at S[j, j] and w is
// scratch of max(l, l2) values.
func chaseLeft(s []float64, ld, l, l2 int, v []float64, tau float64, w []float64) {
	_ = s[(l-1)*ld+l2] // the last element of B or D that is touched
	C.htsr_chase_left((*C.double)(unsafe.Pointer(&s[0])), C.int64_t(ld), C.int64_t(l), C.int64_t(l2),
		(*C.double)(unsafe.Pointer(&v[0])), C.double(tau), (*C.double)(unsafe.Pointer(&w[0])))
}

// chaseRight replaces rows 1 … l−1 of B by B·H₂ for H₂ = I − τ·u·uᵀ
// (htsr_kernels.c).
func chaseRight(s []float64, ld, l, l2 int, u []float64, tau float64) {
	_ = s[(l-1)*ld+l2]
	C.htsr_chase_right((*C.double)(unsafe.Pointer(&s[0])), C.int64_t(ld), C.int64_t(l), C.int64_t(l2),
		(*C.double)(unsafe.Pointer(&u[0])), C.double(tau))
}

// isa names the instruction set of the kernels: "avx2" or "scalar".
func isa() string { return isaNames[C.htsr_isa()] }

var isaNames = [...]string{C.HTSR_SCALAR: "scalar", C.HTSR_AVX2: "avx2"}

// setISA selects the kernels by name for tests; it returns the name in
// use, which differs when the CPU lacks the one asked for.
func setISA(name string) string {
	for i, n := range isaNames {
		if n == name {
			C.htsr_set_isa(C.int(i))
		}
	}
	return isa()
}
