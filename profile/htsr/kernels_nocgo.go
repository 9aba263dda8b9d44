//go:build !cgo

package htsr

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Without cgo the products run in gonum's Dgemm and the rest in plain Go
// loops.

// gemmRows adds alpha·X·Yᵀ to rows [i0, i1) of the n-column c, by gonum's
// Dgemm. It computes whole rows even with upper; the lower triangle is
// scratch.
func gemmRows(i0, i1, n, k int, alpha float64, x []float64, ldx int, y []float64, ldy int, c []float64, ldc int, upper bool) {
	blas64.Implementation().Dgemm(blas.NoTrans, blas.Trans, i1-i0, n, k, alpha, x[i0*ldx:], ldx, y, ldy, 1, c[i0*ldc:], ldc)
}

// symmRows computes the share of rows [i0, i1) of the upper triangle in
// A·V, for the symmetric m×m A held in the upper triangle of a and the
// m×nv v: it sets rows [i0, i1) of z and adds to rows after i0 of zt.
func symmRows(i0, i1, m, nv int, a []float64, lda int, v []float64, ldv int, z, zt []float64, ldz int) {
	for i := i0; i < i1; i++ {
		ai, vi, zi := a[i*lda:i*lda+m], v[i*ldv:i*ldv+nv], z[i*ldz:i*ldz+nv]
		for q := range zi {
			zi[q] = ai[i] * vi[q]
		}
		for p := i + 1; p < m; p++ {
			vp, ztp := v[p*ldv:p*ldv+nv], zt[p*ldz:p*ldz+nv]
			for q := range zi {
				zi[q] += ai[p] * vp[q]
				ztp[q] += ai[p] * vi[q]
			}
		}
	}
}

// chaseLeft replaces the diagonal block D = S[j:j+l, j:j+l] of the band
// matrix by H·D·H and the block B = S[j:j+l, j+l:j+l+l2] right of it by
// H·B, for H = I − τ·v·vᵀ. s starts at S[j, j]; S[j+r, j+c] = s[r·ld + c − r]
// for c ≥ r. w is scratch of max(l, l2) values.
func chaseLeft(s []float64, ld, l, l2 int, v []float64, tau float64, w []float64) {
	// D −= v·wᵀ + w·vᵀ with w = τ·D·v − (τ²/2)(vᵀ·D·v)·v.
	v, w = v[:l], w[:max(l, l2)]
	clear(w)
	for r, vr := range v {
		dr := s[r*ld : r*ld+l-r] // D[r, r:l]
		sum := dr[0] * vr
		for c := 1; c < len(dr); c++ {
			sum += dr[c] * v[r+c]
			w[r+c] += dr[c] * vr
		}
		w[r] += sum
	}
	dot := 0.0
	for r, vr := range v {
		w[r] *= tau
		dot += w[r] * vr
	}
	alpha := -tau / 2 * dot
	for r, vr := range v {
		w[r] += alpha * vr
	}
	for r, vr := range v {
		dr, wr := s[r*ld:r*ld+l-r], w[r]
		for c := range dr {
			dr[c] -= vr*w[r+c] + wr*v[r+c]
		}
	}
	// B −= τ·v·(Bᵀ·v)ᵀ; row r of B starts at s[r·ld + l − r].
	u := w[:l2]
	clear(u)
	for r, vr := range v {
		for c, x := range s[r*ld+l-r : r*ld+l-r+l2] {
			u[c] += vr * x
		}
	}
	for r, vr := range v {
		br, f := s[r*ld+l-r:r*ld+l-r+l2], tau*vr
		for c := range br {
			br[c] -= f * u[c]
		}
	}
}

// chaseRight replaces rows 1 … l−1 of B by B·H₂ for H₂ = I − τ·u·uᵀ.
func chaseRight(s []float64, ld, l, l2 int, u []float64, tau float64) {
	u = u[:l2]
	for r := 1; r < l; r++ {
		br, dot := s[r*ld+l-r:r*ld+l-r+l2], 0.0
		for c, x := range br {
			dot += x * u[c]
		}
		for c := range br {
			br[c] -= tau * dot * u[c]
		}
	}
}

// isa names the instruction set of the kernels: "go" without cgo.
func isa() string { return "go" }

func setISA(string) string { return "go" }
