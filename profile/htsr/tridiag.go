package htsr

import (
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/gonum"
)

// The fast route to the eigenvalues of A·Aᵀ, exact like dsyev but with
// almost all flops in a blocked matrix product (htsr_kernels.c):
//
//  1. the upper triangle of the Gram matrix G = A·Aᵀ;
//  2. G to a band matrix of half-bandwidth bandWidth by blocked Householder
//     transforms, each panel a QR factorization and a two-sided update
//     made of two matrix products (LAPACK dsytrd_sy2sb);
//  3. the band to tridiagonal form by Householder bulge chasing, O(n²·b)
//     flops (LAPACK dsytrd_sb2st);
//  4. the eigenvalues of the tridiagonal matrix by the QR iteration of
//     gonum's Dsterf.
//
// The one-stage reduction of dsytrd (which dsyev uses) needs a product of
// the whole trailing matrix with a vector for every column, so its time is
// set by memory bandwidth (at 4096×4096 it read about 90 GB, over 10 s,
// even in C); step 2 reads the trailing matrix twice a panel instead.

// bandWidth is the half-bandwidth of stage 2's band matrix and the panel
// width of stage 1: wider panels make stage 1's products more efficient and
// stage 2's bulge chasing proportionally slower.
const bandWidth = 32

// gramTridiagEigenvalues returns the ascending eigenvalues of A·Aᵀ for the
// s×l row-major a (s ≤ l), not yet clamped.
func gramTridiagEigenvalues(a []float64, s, l int) ([]float64, bool) {
	g := make([]float64, s*s)
	gemm(s, s, l, 1, a, l, a, l, g, s, true)
	reduceToBand(g, s)
	d, e := bandToTridiagonal(g, s)
	return d, gonum.Implementation{}.Dsterf(s, d, e)
}

// reduceToBand overwrites the symmetric n×n matrix held in the upper
// triangle of the row-major a with a band matrix B = Qᵀ·A·Q of half-
// bandwidth bandWidth, in the same storage: afterwards only a[i·n + j] with
// i ≤ j ≤ i + bandWidth are meaningful.
//
// Panel k is the row block [k, k+b). The QR factorization of the transpose
// of its part right of the band, P = A[k:k+b, k+b:n], gives Pᵀ = Q_k·R with
// Q_k = I − V·T·Vᵀ, so that P·Q_k = Rᵀ is lower triangular and the band
// ends there. The trailing matrix A₂₂ = A[k+b:n, k+b:n] becomes
//
//	Q_kᵀ·A₂₂·Q_k = A₂₂ − V·Wᵀ − W·Vᵀ,  X = A₂₂·V·T,  W = X − ½·V·(Tᵀ·Vᵀ·X),
//
// where A₂₂·V and the rank-2b update are the products that cost.
func reduceToBand(a []float64, n int) {
	const b, ld = bandWidth, 2 * bandWidth
	bl, lap := blas64.Implementation(), gonum.Implementation{}
	pt := make([]float64, n*b)  // Pᵀ, then its QR factors
	vw := make([]float64, n*ld) // row r: V[r, 0:b], then W[r, 0:b]
	wv := make([]float64, n*ld) // row r: W[r, 0:b], then V[r, 0:b]
	x := make([]float64, n*b)
	zt := make([]float64, runtime.GOMAXPROCS(0)*n*b) // symm's scratch
	t, m2 := make([]float64, b*b), make([]float64, b*b)
	tau := make([]float64, b)
	work := make([]float64, 1)
	lap.Dgeqrf(n, b, pt, b, tau, work, -1)
	work = make([]float64, int(work[0]))
	for k := 0; n-k-b > 1; k += b {
		m, r0 := n-k-b, k+b // the trailing matrix is rows and columns r0:n
		kr := min(m, b)     // reflectors in this panel
		for c := range b {
			for r, v := range a[(k+c)*n+r0 : (k+c+1)*n] {
				pt[r*b+c] = v
			}
		}
		lap.Dgeqrf(m, b, pt, b, tau[:kr], work, len(work))
		clear(vw[:m*ld])
		for c := range b {
			row := a[(k+c)*n+r0 : (k+c+1)*n]
			for r := range row {
				switch {
				case r <= c:
					row[r] = pt[r*b+c] // R
				case c < kr:
					row[r], vw[r*ld+c] = 0, pt[r*b+c]
				default:
					row[r] = 0
				}
			}
			if c < kr {
				vw[c*ld+c] = 1
			}
		}
		lap.Dlarft(lapack.Forward, lapack.ColumnWise, m, kr, vw, ld, tau[:kr], t, b)

		// X = A₂₂·V·T, then M = Tᵀ·Vᵀ·X and W = X − ½·V·M.
		a22 := a[r0*n+r0:]
		symm(m, b, a22, n, vw, ld, x, zt)
		bl.Dtrmm(blas.Right, blas.Upper, blas.NoTrans, blas.NonUnit, m, kr, 1, t, b, x, b)
		bl.Dgemm(blas.Trans, blas.NoTrans, kr, kr, m, 1, vw, ld, x, b, 0, m2, b)
		bl.Dtrmm(blas.Left, blas.Upper, blas.Trans, blas.NonUnit, kr, kr, 1, t, b, m2, b)
		bl.Dgemm(blas.NoTrans, blas.NoTrans, m, kr, kr, -0.5, vw, ld, m2, b, 1, x, b)

		// A₂₂ −= [V W]·[W V]ᵀ.
		for r := range m {
			copy(vw[r*ld+b:r*ld+b+kr], x[r*b:r*b+kr])
			copy(wv[r*ld:r*ld+b], vw[r*ld+b:(r+1)*ld])
			copy(wv[r*ld+b:(r+1)*ld], vw[r*ld:r*ld+b])
		}
		gemm(m, m, ld, -1, vw, ld, wv, ld, a22, n, true)
	}
}

// bandToTridiagonal returns the diagonal d and off-diagonal e of a
// tridiagonal matrix orthogonally similar to the band matrix that
// reduceToBand left in a.
//
// Sweep i annihilates row i right of the superdiagonal with a reflector H
// on the b indices J = [i+1, i+1+b). Applying H to the rows J turns the
// block right of them, B = S[J, J+b], from lower triangular into full; a
// reflector on the next b indices restores row i+1 of B to one element and
// is chased down in the same way to the end of the matrix. The rest of each
// bulge stays for the following sweeps to clear (each sweep's indices are
// one further on), so S never extends more than 2b past its diagonal.
func bandToTridiagonal(a []float64, n int) (d, e []float64) {
	const b, ld = bandWidth, 2 * bandWidth
	s := make([]float64, n*ld) // s[i·ld + t] = S[i, i+t]
	for i := range n {
		copy(s[i*ld:i*ld+min(b+1, n-i)], a[i*n+i:])
	}
	lap := gonum.Implementation{}
	v, w := make([]float64, b), make([]float64, b)
	for i := 0; i < n-2; i++ {
		l := min(b, n-1-i)
		row := s[i*ld+1 : i*ld+1+l]
		beta, tau := lap.Dlarfg(l, row[0], row[1:], 1)
		v[0] = 1
		copy(v[1:l], row[1:])
		row[0] = beta
		clear(row[1:])
		for j := i + 1; tau != 0; {
			j2 := j + l
			l2 := min(b, n-j2)
			chaseLeft(s[j*ld:], ld, l, l2, v, tau, w)
			if l2 < 2 {
				break // nothing right of the block to clear
			}
			// The next reflector clears row j of B = S[j:j+l, j2:j2+l2]
			// after its first element and is applied to the other rows of B
			// from the right.
			row := s[j*ld+l : j*ld+l+l2]
			beta, tau = lap.Dlarfg(l2, row[0], row[1:], 1)
			v[0] = 1
			copy(v[1:l2], row[1:])
			row[0] = beta
			clear(row[1:])
			if tau != 0 {
				chaseRight(s[j*ld:], ld, l, l2, v, tau)
			}
			j, l = j2, l2
		}
	}
	d, e = make([]float64, n), make([]float64, max(n-1, 0))
	for i := range n {
		d[i] = s[i*ld]
		if i < n-1 {
			e[i] = s[i*ld+1]
		}
	}
	return d, e
}

// minSplit is the number of multiply-adds below which a kernel call runs on
// the calling goroutine alone.
const minSplit = 1 << 20

// threadsFor returns the number of threads to split a kernel call doing
// work multiply-adds over: GOMAXPROCS, or 1 for small calls.
func threadsFor(work int) int {
	if work < minSplit {
		return 1
	}
	return runtime.GOMAXPROCS(0)
}

// splitRows runs f(p, r0, r1) for p < parts on disjoint row ranges
// [r0, r1) covering [0, m), each on a goroutine of its own. The ranges have
// equal numbers of rows, or with triangle equal shares of the m×m upper
// triangle; empty ones are skipped.
func splitRows(m, parts int, triangle bool, f func(p, r0, r1 int)) {
	var wg sync.WaitGroup
	r0 := 0
	for p := range parts {
		share := float64(p+1) / float64(parts)
		r := int(share * float64(m))
		if triangle {
			// Rows [0, r) hold m·r − r²/2 of the triangle's m²/2 elements.
			r = m - int(float64(m)*math.Sqrt(1-share))
		}
		if p == parts-1 {
			r = m
		}
		if r > r0 {
			lo, hi := r0, r
			wg.Go(func() { f(p, lo, hi) })
		}
		r0 = r
	}
	wg.Wait()
}

// gemm adds alpha·X·Yᵀ to the m×n c, where X is m×k and Y is n×k; with
// upper (m == n) only the upper triangle of c is computed and the strict
// lower triangle is scratch.
func gemm(m, n, k int, alpha float64, x []float64, ldx int, y []float64, ldy int, c []float64, ldc int, upper bool) {
	splitRows(m, threadsFor(m*n*k), upper, func(_, r0, r1 int) {
		gemmRows(r0, r1, n, k, alpha, x, ldx, y, ldy, c, ldc, upper)
	})
}

// symm sets the m×nv z to A·V for the symmetric m×m A held in the upper
// triangle of a and the m×nv v, with row stride nv. It needs one Zt of m×nv
// values a thread (see htsr_kernels.c); it takes them from scratch, or
// allocates them if scratch is too short.
func symm(m, nv int, a []float64, lda int, v []float64, ldv int, z, scratch []float64) {
	parts := threadsFor(m * m * nv / 2)
	if len(scratch) < parts*m*nv {
		scratch = make([]float64, parts*m*nv)
	}
	scratch = scratch[:parts*m*nv]
	clear(scratch)
	splitRows(m, parts, true, func(p, r0, r1 int) {
		symmRows(r0, r1, m, nv, a, lda, v, ldv, z, scratch[p*m*nv:(p+1)*m*nv], nv)
	})
	for p := range parts {
		blas64.Implementation().Daxpy(m*nv, 1, scratch[p*m*nv:(p+1)*m*nv], 1, z[:m*nv], 1)
	}
}
