package htsr

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/lapack64"
)

// Eigenvalues returns the eigenvalues of WᵀW, the squared singular values of
// the row-major rows×cols matrix w: min(rows, cols) of them, ascending, in
// float64, with round-off below zero clamped to 0.
//
// It forms the smaller Gram matrix (WᵀW when cols ≤ rows, else WWᵀ; both
// have the same non-zero spectrum), reduces it to tridiagonal form by
// orthogonal similarity transforms and takes the eigenvalues of that
// without eigenvectors. From order 256 the reduction is the two-stage one
// of tridiag.go, through a band matrix, with its products in C with AVX2
// (gonum's Dgemm without cgo); below, it is gonum's dsyev. Squaring costs
// accuracy only for eigenvalues below about 1e-16·λmax, far under any
// power-law tail.
//
// Cost, on the 2-core development machine with other work running: a
// 4096×4096 matrix takes about 5.4 CPU-seconds (Gram matrix 1.6, band
// reduction 3.5, the rest 0.6), where dsyev took 116; 4096×11008 takes
// 8.6, its Gram matrix 2.7× as long. Without other load the products use
// both cores. See BenchmarkEigen4096x4096.
func Eigenvalues(w []float64, rows, cols int) ([]float64, error) {
	a, s, l, err := gramFactor(w, rows, cols)
	if err == nil {
		var eig []float64
		if eig, err = gramEigenvalues(a, s, l); err == nil {
			return eig, nil
		}
	}
	return nil, fmt.Errorf("htsr: %w", err)
}

// gramFactor copies the row-major rows×cols matrix w into a float64 s×l
// row-major matrix A with s = min(rows, cols) ≤ l, transposing when rows >
// cols, so that A·Aᵀ is the smaller Gram matrix. It rejects non-finite
// values, naming the first.
func gramFactor[T float32 | float64](w []T, rows, cols int) (a []float64, s, l int, err error) {
	switch {
	case rows <= 0 || cols <= 0:
		return nil, 0, 0, fmt.Errorf("empty matrix %d×%d", rows, cols)
	case len(w) != rows*cols:
		return nil, 0, 0, fmt.Errorf("%d values for a %d×%d matrix", len(w), rows, cols)
	}
	s, l = min(rows, cols), max(rows, cols)
	a = make([]float64, s*l)
	for r := range rows {
		row := w[r*cols : (r+1)*cols]
		for c, v := range row {
			f := float64(v)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, 0, 0, fmt.Errorf("weight %v at row %d, column %d", f, r, c)
			}
			if rows <= cols {
				a[r*l+c] = f
			} else {
				a[c*l+r] = f
			}
		}
	}
	return a, s, l, nil
}

// minTridiag is the order from which gramEigenvalues takes the blocked
// route; below it gonum's dsyev is fast enough.
const minTridiag = 256

// gramEigenvalues returns the ascending eigenvalues of A·Aᵀ for the s×l
// row-major a (s ≤ l), clamped at 0.
func gramEigenvalues(a []float64, s, l int) ([]float64, error) {
	var d []float64
	var ok bool
	if s >= minTridiag {
		d, ok = gramTridiagEigenvalues(a, s, l)
	} else {
		d, ok = syevEigenvalues(a, s, l)
	}
	if !ok {
		return nil, errors.New("symmetric eigenvalue iteration did not converge")
	}
	return clampSort(d), nil
}

// clampSort sets the negative values of d, round-off, to 0 and sorts d.
func clampSort(d []float64) []float64 {
	for i, v := range d {
		d[i] = max(v, 0)
	}
	slices.Sort(d)
	return d
}

// syevEigenvalues returns the eigenvalues of A·Aᵀ for the s×l row-major a
// (s ≤ l) by gonum's Dgemm and dsyev: the reference for the blocked route.
func syevEigenvalues(a []float64, s, l int) ([]float64, bool) {
	g := make([]float64, s*s)
	// Dgemm does twice the flops of Dsyrk but is blocked and parallel: at
	// 4096×4096 it is 2.4× faster on two cores.
	blas64.Implementation().Dgemm(blas.NoTrans, blas.Trans, s, s, l, 1, a, l, a, l, 0, g, s)
	sym := blas64.Symmetric{N: s, Stride: s, Data: g, Uplo: blas.Upper}
	eig := make([]float64, s)
	work := make([]float64, 1)
	lapack64.Syev(lapack.EVNone, sym, eig, work, -1)
	work = make([]float64, int(work[0]))
	return eig, lapack64.Syev(lapack.EVNone, sym, eig, work, len(work))
}
