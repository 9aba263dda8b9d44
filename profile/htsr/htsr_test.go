package htsr

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

var methods = []XminMethod{XminKS, XminMid, XminPeak}

func randMatrix(r *rand.Rand, rows, cols int) []float64 {
	w := make([]float64, rows*cols)
	for i := range w {
		w[i] = r.NormFloat64()
	}
	return w
}

// TestEigenvaluesMatchSVD checks the Gram route against gonum's SVD.
func TestEigenvaluesMatchSVD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][2]int{{1, 1}, {5, 3}, {3, 5}, {17, 17}, {40, 23}, {23, 40}} {
		rows, cols := sh[0], sh[1]
		w := randMatrix(r, rows, cols)
		got, err := Eigenvalues(w, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		var svd mat.SVD
		if !svd.Factorize(mat.NewDense(rows, cols, w), mat.SVDNone) {
			t.Fatal("SVD failed")
		}
		want := svd.Values(nil)
		for i := range want {
			want[i] *= want[i]
		}
		slices.Sort(want)
		if len(got) != len(want) {
			t.Fatalf("%d×%d: %d eigenvalues, want %d", rows, cols, len(got), len(want))
		}
		lmax := want[len(want)-1]
		for i := range want {
			if d := math.Abs(got[i] - want[i]); d > 1e-9*lmax {
				t.Errorf("%d×%d: λ%d = %g, want %g", rows, cols, i, got[i], want[i])
			}
		}
	}
}

func TestAlphaScaleInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const rows, cols = 60, 90
	w := randMatrix(r, rows, cols)
	for _, m := range methods {
		base := fitMatrix(t, w, rows, cols, m)
		for _, c := range []float64{1e-3, 0.5, 7, 1e4} {
			cw := make([]float64, len(w))
			for i, v := range w {
				cw[i] = c * v
			}
			f := fitMatrix(t, cw, rows, cols, m)
			if math.Abs(f.Alpha-base.Alpha) > 1e-9 || f.NTail != base.NTail {
				t.Errorf("%s: alpha(%g·W) = %.12g (n %d), alpha(W) = %.12g (n %d)", m, c, f.Alpha, f.NTail, base.Alpha, base.NTail)
			}
		}
	}
}

func fitMatrix(t *testing.T, w []float64, rows, cols int, m XminMethod) Fit {
	t.Helper()
	eig, err := Eigenvalues(w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	f, err := FitPowerLaw(eig, m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// pareto draws n sorted samples of density ∝ x^−alpha above xmin.
func pareto(r *rand.Rand, n int, alpha, xmin float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = xmin * math.Pow(1-r.Float64(), -1/(alpha-1))
	}
	slices.Sort(x)
	return x
}

// TestFitRecoversPareto: on pure Pareto samples every method must find the
// exponent within 3σ + 0.05 (σ the reported standard error, which grows
// when the KS search settles on a short tail).
func TestFitRecoversPareto(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, alpha := range []float64{2, 2.5, 3, 4, 6} {
		x := pareto(r, 4000, alpha, 0.3)
		for _, m := range methods {
			f, err := FitPowerLaw(x, m)
			if err != nil {
				t.Fatal(err)
			}
			if d := math.Abs(f.Alpha - alpha); d > 3*f.Sigma+0.05 {
				t.Errorf("alpha %g, %s: got %.3f ± %.3f (xmin %.3g, n %d, D %.3f)", alpha, m, f.Alpha, f.Sigma, f.Xmin, f.NTail, f.KS)
			}
			if f.N != len(x) || f.LambdaMax != x[len(x)-1] || f.Warning != "" {
				t.Errorf("alpha %g, %s: N %d, λmax %g, warning %q", alpha, m, f.N, f.LambdaMax, f.Warning)
			}
			if m == XminPeak && f.Xmin > 0.3*1.05*1.05 { // the log-density of a Pareto peaks at xmin
				t.Errorf("alpha %g, peak: xmin %g, want near 0.3", alpha, f.Xmin)
			}
		}
	}
}

// TestKSFindsPlantedXmin: 70% of the samples form a uniform bulk on
// [0.05, 0.8), 30% a Pareto tail above xmin = 1. The KS search must not cut
// into the bulk (xmin ≥ 0.98), must keep at least half of the planted tail,
// and must recover alpha within 3σ + 0.05. The KS minimum wanders up the
// tail by sampling noise: over 100 seeds per alpha the bulk was never
// chosen and |alpha error| stayed under 3.8σ, but xmin exceeded 1.1 in
// 22–41% of runs and fewer than half the tail points were kept in 3–10%,
// so this test uses one fixed seed. (With the bulk on [0.05, 1) and alpha
// 3 the two densities meet without a jump at 1, and xmin is not
// identifiable.)
func TestKSFindsPlantedXmin(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const n, frac, xmin = 5000, 0.3, 1.0
	for _, alpha := range []float64{2, 2.5, 3, 4} {
		x := pareto(r, int(frac*n), alpha, xmin)
		for range n - len(x) {
			x = append(x, 0.05+0.75*r.Float64())
		}
		slices.Sort(x)
		f, err := FitPowerLaw(x, XminKS)
		if err != nil {
			t.Fatal(err)
		}
		if f.Xmin < 0.98*xmin || f.NTail < int(frac*n)/2 || math.Abs(f.Alpha-alpha) > 3*f.Sigma+0.05 {
			t.Errorf("alpha %g: got alpha %.3f ± %.3f, xmin %.3f (n %d), want xmin %g (n %d)", alpha, f.Alpha, f.Sigma, f.Xmin, f.NTail, xmin, int(frac*n))
		}
	}
}

func TestFitSmallSpectrumWarns(t *testing.T) {
	f, err := FitPowerLaw([]float64{0, 0, 1, 2, 3, 5, 9, 20, 50}, XminKS)
	if err != nil {
		t.Fatal(err)
	}
	if f.NTail != 7 || f.N != 9 || f.Xmin != 1 || f.Warning != "only 7 tail points" {
		t.Errorf("got %+v", f)
	}
	// mid on 12 values leaves 6.
	eig := make([]float64, 12)
	for i := range eig {
		eig[i] = float64(i + 1)
	}
	if f, err := FitPowerLaw(eig, XminMid); err != nil || f.NTail != 6 || f.Xmin != 7 || f.Warning == "" {
		t.Errorf("mid: got %+v, %v", f, err)
	}
}

func TestErrors(t *testing.T) {
	nan := randMatrix(rand.New(rand.NewPCG(9, 10)), 4, 6)
	nan[2*6+5] = math.NaN()
	for _, c := range []struct {
		name       string
		w          []float64
		rows, cols int
		want       string
	}{
		{"empty", nil, 0, 0, "empty matrix"},
		{"short", make([]float64, 5), 2, 3, "5 values for a 2×3"},
		{"nan", nan, 4, 6, "weight NaN at row 2, column 5"},
		{"zero", make([]float64, 12), 3, 4, "0 of 3 eigenvalues are positive"},
	} {
		eig, err := Eigenvalues(c.w, c.rows, c.cols)
		if err == nil {
			_, err = FitPowerLaw(eig, XminKS)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	for _, c := range []struct {
		eig  []float64
		m    XminMethod
		want string
	}{
		{nil, XminKS, "empty spectrum"},
		{[]float64{1, 2}, "median", "unknown xmin method"},
		{[]float64{2, 1}, XminKS, "not ascending"},
		{[]float64{1, math.Inf(1)}, XminKS, "eigenvalue 1 is +Inf"},
		{[]float64{0, 3}, XminKS, "1 of 2 eigenvalues are positive"},
		{[]float64{3, 3, 3}, XminMid, "all 3 positive eigenvalues equal 3"},
	} {
		if _, err := FitPowerLaw(c.eig, c.m); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %s: error %v, want one containing %q", c.eig, c.m, err, c.want)
		}
	}
	if _, err := ParseXmin("peak"); err != nil {
		t.Error(err)
	}
}

// randomModel builds a 2-layer model with Gaussian float32 weights.
func randomModel(t *testing.T) *model.Checkpoint {
	t.Helper()
	cfg := model.Config{Arch: "llama", Dim: 24, HiddenDim: 56, NLayers: 2, NHeads: 4, NKVHeads: 2, HeadDim: 6,
		VocabSize: 40, SeqLen: 16, NormEps: 1e-5, RopeTheta: 1e4, Synthetic: true}
	m := model.New(cfg)
	r := rand.New(rand.NewPCG(11, 12))
	for _, s := range cfg.Shapes() {
		v := make([]float32, model.Elems(s.Shape))
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		data, err := model.Encode(v, model.F32)
		if err != nil {
			t.Fatal(err)
		}
		m.Add(&model.Tensor{Name: s.Name, DType: model.F32, Shape: s.Shape, Data: data})
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestProfileRandomModel(t *testing.T) {
	m := randomModel(t)
	sites := plan.Sites(&m.Config)
	one, err := FitModel(context.Background(), m, Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 7*m.Config.NLayers || len(one) != len(sites) {
		t.Fatalf("%d fits for %d sites", len(one), len(sites))
	}
	for i, s := range sites {
		p, _ := model.ParseProjection(s.Proj)
		w, _ := m.Tensors[model.ProjName(s.Layer, p)].Float32()
		w64 := make([]float64, len(w))
		for j, v := range w {
			w64[j] = float64(v)
		}
		if want := fitMatrix(t, w64, s.DOut, s.DIn, XminKS); one[i] != want {
			t.Errorf("site %d (%d %s): %+v, want %+v", i, s.Layer, s.Proj, one[i], want)
		}
		if one[i].N != min(s.DIn, s.DOut) {
			t.Errorf("site %d: N %d, want %d", i, one[i].N, min(s.DIn, s.DOut))
		}
	}
	two, err := FitModel(context.Background(), m, Options{Workers: 2, Method: XminKS})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(one, two) {
		t.Errorf("workers 1 and 2 differ:\n%+v\n%+v", one, two)
	}
}

func TestProfileErrors(t *testing.T) {
	m := randomModel(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := FitModel(ctx, m, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: error %v", err)
	}
	if _, err := FitModel(context.Background(), m, Options{Method: "max"}); err == nil {
		t.Error("bad method: no error")
	}
	name := model.ProjName(1, model.ProjV)
	tensor := m.Tensors[name]
	w, _ := tensor.Float32()
	w[7] = float32(math.NaN())
	tensor.Data, _ = model.Encode(w, model.F32)
	_, err := FitModel(context.Background(), m, Options{Workers: 2})
	if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("NaN weight: error %v, want one naming %s", err, name)
	}
}

func TestProfileStories260K(t *testing.T) {
	m, err := llama2c.Load(filepath.Join(testfiles.Stories260K(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sites := plan.Sites(&m.Config)
	for _, method := range methods {
		fits, err := FitModel(context.Background(), m, Options{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		sum := map[string]float64{}
		for i, f := range fits {
			s := sites[i]
			if math.IsNaN(f.Alpha) || math.IsInf(f.Alpha, 0) || f.Alpha <= 1 {
				t.Errorf("%s layer %d %s: alpha %g", method, s.Layer, s.Proj, f.Alpha)
			}
			t.Logf("%-4s layer %d %-4s %3d×%-3d alpha %6.3f ± %.3f  xmin %.4g  n %3d/%3d  D %.3f  λmax %.4g %s",
				method, s.Layer, s.Proj, s.DOut, s.DIn, f.Alpha, f.Sigma, f.Xmin, f.NTail, f.N, f.KS, f.LambdaMax, f.Warning)
			sum[s.Proj] += f.Alpha / float64(m.Config.NLayers)
		}
		var mean strings.Builder
		for p := range model.NumProjections {
			fmt.Fprintf(&mean, " %s=%.3f", p, sum[p.String()])
		}
		t.Logf("%s mean alpha:%s", method, mean.String())
	}
}

// benchEigen times eig plus the default fit on one Gaussian matrix of
// Llama-2-7B's shape. Run with -benchtime=1x: one op takes seconds to
// minutes.
func benchEigen(b *testing.B, rows, cols int, eig func(a []float64, s, l int) ([]float64, bool)) {
	if testing.Short() {
		b.Skip("seconds to minutes per op")
	}
	w := randMatrix(rand.New(rand.NewPCG(13, 14)), rows, cols)
	for b.Loop() {
		a, s, l, err := gramFactor(w, rows, cols)
		if err != nil {
			b.Fatal(err)
		}
		e, ok := eig(a, s, l)
		if !ok {
			b.Fatal("no convergence")
		}
		if _, err := FitPowerLaw(clampSort(e), XminKS); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEigen2048x2048(b *testing.B)  { benchEigen(b, 2048, 2048, gramTridiagEigenvalues) }
func BenchmarkEigen4096x4096(b *testing.B)  { benchEigen(b, 4096, 4096, gramTridiagEigenvalues) }
func BenchmarkEigen4096x11008(b *testing.B) { benchEigen(b, 4096, 11008, gramTridiagEigenvalues) }

// BenchmarkEigenSyev2048x2048 times the reference route, gonum's Dgemm and
// dsyev, for comparison.
func BenchmarkEigenSyev2048x2048(b *testing.B) { benchEigen(b, 2048, 2048, syevEigenvalues) }
