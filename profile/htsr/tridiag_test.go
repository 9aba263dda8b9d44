package htsr

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/acttail/acttail-gpu/internal/testmodel"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// eigTol bounds |λ_blocked − λ_ref| relative to λmax: both routes are
// backward stable, so their eigenvalues differ by a small multiple of
// n·ε·λmax (at most 3.2e-14·λmax seen, at n = 4096).
const eigTol = 1e-10

// forEachISA runs f once for every instruction set the kernels have on
// this CPU.
func forEachISA(t *testing.T, f func(t *testing.T)) {
	defer setISA(isa())
	for _, name := range []string{"scalar", "avx2", "go"} {
		if setISA(name) != name {
			continue
		}
		t.Run(name, f)
	}
}

// TestGemmKernel checks c + alpha·X·Yᵀ against plain sums, with shapes
// that leave partial register tiles and span several KC blocks and threads;
// with upper only the upper triangle counts.
func TestGemmKernel(t *testing.T) {
	forEachISA(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(21, 22))
		for _, sh := range [][3]int{{1, 1, 1}, {5, 5, 3}, {13, 9, 64}, {97, 97, 300}, {300, 300, 300}, {700, 37, 40}} {
			for _, upper := range []bool{false, true} {
				m, n, k := sh[0], sh[1], sh[2]
				if upper && m != n {
					continue
				}
				ldx, ldy, ldc := k+3, k+2, n+1 // strides wider than the rows
				x, y, c := randMatrix(r, m, ldx), randMatrix(r, n, ldy), randMatrix(r, m, ldc)
				want := slices.Clone(c)
				gemm(m, n, k, -0.75, x, ldx, y, ldy, c, ldc, upper)
				for i := range m {
					for j := range n {
						if upper && j < i {
							continue
						}
						s := 0.0
						for p := range k {
							s += x[i*ldx+p] * y[j*ldy+p]
						}
						w := want[i*ldc+j] - 0.75*s
						if d := math.Abs(c[i*ldc+j] - w); d > 1e-12*(1+math.Abs(w)) {
							t.Fatalf("%d×%d×%d, upper %v: c[%d][%d] = %g, want %g", m, n, k, upper, i, j, c[i*ldc+j], w)
						}
					}
				}
			}
		}
	})
}

// TestSymmKernel checks A·V for a symmetric A stored in its upper triangle,
// with NaN in the lower triangle that it must not read.
func TestSymmKernel(t *testing.T) {
	forEachISA(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(23, 24))
		for _, m := range []int{1, 5, 7, 13, 100, 701} {
			for _, nv := range []int{1, 3, 8, 32} {
				lda, ldv := m+2, nv+5
				a, v := randMatrix(r, m, lda), randMatrix(r, m, ldv)
				for i := range m {
					for j := range i {
						a[i*lda+j] = math.NaN()
					}
				}
				z := make([]float64, m*nv)
				symm(m, nv, a, lda, v, ldv, z, nil)
				for i := range m {
					for q := range nv {
						w := 0.0
						for p := range m {
							w += a[min(i, p)*lda+max(i, p)] * v[p*ldv+q]
						}
						if d := math.Abs(z[i*nv+q] - w); d > 1e-12*float64(m) {
							t.Fatalf("m %d, nv %d: z[%d][%d] = %g, want %g", m, nv, i, q, z[i*nv+q], w)
						}
					}
				}
			}
		}
	})
}

// TestTridiagMatchesSyev checks the blocked route against gonum's dsyev
// and, where cheap, against its SVD, on Gaussian matrices whose orders
// straddle the panel width and the switch to the blocked route.
func TestTridiagMatchesSyev(t *testing.T) {
	shapes := [][2]int{{1, 1}, {2, 2}, {3, 3}, {17, 17}, {40, 23}, {255, 255}, {256, 256}, {257, 257},
		{700, 700}, {300, 1000}, {1000, 300}}
	if testing.Short() {
		shapes = shapes[:6]
	}
	forEachISA(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(25, 26))
		for _, sh := range shapes {
			rows, cols := sh[0], sh[1]
			w := randMatrix(r, rows, cols)
			a, s, l, err := gramFactor(w, rows, cols)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := gramTridiagEigenvalues(a, s, l)
			want, ok2 := syevEigenvalues(a, s, l)
			if !ok || !ok2 {
				t.Fatalf("%d×%d: no convergence", rows, cols)
			}
			got, want = clampSort(got), clampSort(want)
			pub, err := Eigenvalues(w, rows, cols) // either route, by size
			if err != nil {
				t.Fatal(err)
			}
			if d := maxEigDiff(pub, want); d > eigTol {
				t.Errorf("%d×%d: Eigenvalues: max |Δλ|/λmax = %g vs dsyev", rows, cols, d)
			}
			d := maxEigDiff(got, want)
			t.Logf("%d×%d: max |Δλ|/λmax = %.2g vs dsyev", rows, cols, d)
			if d > eigTol {
				t.Errorf("%d×%d: max |Δλ|/λmax = %g vs dsyev", rows, cols, d)
			}
			if rows*cols > 300*300 {
				continue
			}
			var svd mat.SVD
			if !svd.Factorize(mat.NewDense(rows, cols, w), mat.SVDNone) {
				t.Fatal("SVD failed")
			}
			sv := svd.Values(nil)
			for i := range sv {
				sv[i] *= sv[i]
			}
			slices.Sort(sv)
			if d := maxEigDiff(got, sv); d > eigTol {
				t.Errorf("%d×%d: max |Δλ|/λmax = %g vs SVD", rows, cols, d)
			}
		}
	})
}

// maxEigDiff returns max |got_i − want_i| / max want for ascending spectra.
func maxEigDiff(got, want []float64) float64 {
	d := 0.0
	for i := range want {
		d = max(d, math.Abs(got[i]-want[i]))
	}
	return d / want[len(want)-1]
}

// TestTridiagAlpha checks that the fitted exponents of the two routes agree
// on a Gaussian matrix and on every projection of stories260K.
func TestTridiagAlpha(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of dsyev")
	}
	type factor struct {
		name string
		a    []float64 // s×l, as gramFactor returns it
		s, l int
	}
	var fs []factor
	add := func(name string, a []float64, s, l int, err error) {
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, factor{name, a, s, l})
	}
	a, s, l, err := gramFactor(randMatrix(rand.New(rand.NewPCG(27, 28)), 1024, 1024), 1024, 1024)
	add("gaussian 1024×1024", a, s, l, err)
	m := testmodel.Stories260K(t)
	defer m.Close()
	for _, site := range plan.Sites(&m.Config) {
		p, err := model.ParseProjection(site.Proj)
		if err != nil {
			t.Fatal(err)
		}
		name := model.ProjName(site.Layer, p)
		tensor, err := m.Tensor(name, site.DOut, site.DIn)
		if err != nil {
			t.Fatal(err)
		}
		w, err := tensor.Float32()
		if err != nil {
			t.Fatal(err)
		}
		a, s, l, err := gramFactor(w, site.DOut, site.DIn)
		add(name, a, s, l, err)
	}
	for _, x := range fs {
		a, s, l := x.a, x.s, x.l
		got, ok := gramTridiagEigenvalues(a, s, l)
		want, ok2 := syevEigenvalues(a, s, l)
		if !ok || !ok2 {
			t.Fatalf("%s: no convergence", x.name)
		}
		got, want = clampSort(got), clampSort(want)
		if d := maxEigDiff(got, want); d > eigTol {
			t.Errorf("%s: max |Δλ|/λmax = %g vs dsyev", x.name, d)
		}
		for _, method := range methods {
			fg, err := FitPowerLaw(got, method)
			if err != nil {
				t.Fatal(err)
			}
			fw, err := FitPowerLaw(want, method)
			if err != nil {
				t.Fatal(err)
			}
			d := math.Abs(fg.Alpha - fw.Alpha)
			t.Logf("%s %s: alpha %.10f, |Δalpha| = %.2g, max |Δλ|/λmax = %.2g", x.name, method, fw.Alpha, d, maxEigDiff(got, want))
			if d > 1e-8 || fg.NTail != fw.NTail {
				t.Errorf("%s %s: alpha %.12g (n %d), dsyev %.12g (n %d)", x.name, method, fg.Alpha, fg.NTail, fw.Alpha, fw.NTail)
			}
		}
	}
}
