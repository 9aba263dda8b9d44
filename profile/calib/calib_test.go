package calib

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/internal/testmodel"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/progress"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// The histogram quantile is within one bin (2^(1/64), about 1.1%) of the
// exact sample quantile.
func TestQuantileMatchesSorted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Hist
	xs := make([]float32, 50000)
	for i := range xs {
		xs[i] = float32(r.NormFloat64() * math.Exp(r.NormFloat64()))
		if i%97 == 0 {
			xs[i] = 0
		}
	}
	h.Add(xs)
	mags := make([]float64, len(xs))
	for i, v := range xs {
		mags[i] = math.Abs(float64(v))
	}
	sort.Float64s(mags)
	for _, q := range []float64{0.001, 0.1, 0.5, 0.8, 0.9, 0.99} {
		exact := mags[int(math.Ceil(q*float64(len(mags))))-1]
		got := float64(h.Quantile(q))
		if exact == 0 {
			if got != 0 {
				t.Fatalf("q %g: got %g, want 0", q, got)
			}
			continue
		}
		if got < exact || got > exact*math.Exp2(1.0/binsPerOctave)*1.0000001 {
			t.Fatalf("q %g: got %g, exact %g", q, got, exact)
		}
	}
	if h.Quantile(0) != 0 {
		t.Fatal("q 0")
	}
	if (&Hist{}).Quantile(0.5) != 0 {
		t.Fatal("empty")
	}
}

// AddScaled counts what Add counts of the products x_j·scale_j.
func TestAddScaled(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2))
	const rows, width = 7, 33
	xs, scale, prod := make([]float32, rows*width), make([]float32, width), make([]float32, rows*width)
	for j := range scale {
		scale[j] = float32(r.Float64() * 3)
	}
	scale[5] = 0
	for i := range xs {
		xs[i] = float32(r.NormFloat64())
		prod[i] = xs[i] * scale[i%width]
	}
	var a, b Hist
	a.AddScaled(xs, scale)
	b.Add(prod)
	if a != b {
		t.Fatal("AddScaled differs from Add of the products")
	}
}

// Thresholds calibrated on text realize the planned sparsity on that text
// within ±2% (the bar), per site, under every selection: the
// thresholds of a weight-informed plan are quantiles of its scores.
func TestThresholdRealizesPlanOnCalibrationText(t *testing.T) {
	for _, sel := range plan.Selections() {
		t.Run(string(sel), func(t *testing.T) { testThresholdRealizes(t, sel) })
	}
}

func testThresholdRealizes(t *testing.T, sel plan.Selection) {
	m := testmodel.Stories260K(t)
	defer m.Close()
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	text := testfiles.Shared(t, "data/tinystories-calib.txt")
	raw, err := readFile(text)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(raw, true)
	e, err := engine.LoadWith(cpu.New(0), m, engine.Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	s := e.NewState(256, 64)
	r := rand.New(rand.NewPCG(3, 3))
	p := &plan.Plan{Version: plan.Version, Selection: sel, Model: plan.Identify(m), Method: "random", Mode: plan.ModeThreshold, Target: 0.5, Sites: plan.Sites(&m.Config)}
	for i := range p.Sites {
		p.Sites[i].Sparsity = 0.3 + 0.6*r.Float64()
		p.Sites[i].K = plan.KeepFor(p.Sites[i].Sparsity, p.Sites[i].DIn)
	}
	bar := progress.New(nil, 0, "")
	rec, err := Calibrate(progress.NewContext(context.Background(), bar), s, ids, p.Sites, sel, 3)
	if err != nil {
		t.Fatal(err)
	}
	if bar.Count() != int64(4*len(ids)) {
		t.Errorf("the context's bar counted %d tokens, want 4 runs of %d", bar.Count(), len(ids))
	}
	if rec.Tokens != len(ids) {
		t.Fatalf("recorded %d tokens of %d", rec.Tokens, len(ids))
	}
	if s.Budgets, err = e.Budgets(p, plan.ModeThreshold); err != nil {
		t.Fatal(err)
	}
	// Run the same text with every token sparse. Later layers see inputs
	// changed by the sparsity of earlier ones, so this is a real test.
	e.Realized()
	logits := make([]float32, m.Config.VocabSize)
	for at := 0; at < len(ids); at += s.Context() {
		s.Reset()
		s.SparseFrom = 0
		n := min(s.Context(), len(ids)-at)
		if err := s.Forward(ids[at:at+n], logits, false); err != nil {
			t.Fatal(err)
		}
	}
	per, _ := e.Realized()
	worst := 0.0
	for i, got := range per {
		d := math.Abs(got - p.Sites[i].Sparsity)
		worst = math.Max(worst, d)
		if d > 0.02 {
			t.Errorf("site %d (layer %d %s): planned %.3f, realized %.3f", i, p.Sites[i].Layer, p.Sites[i].Proj, p.Sites[i].Sparsity, got)
		}
	}
	t.Logf("worst |realized − planned| over %d sites: %.4f", len(per), worst)
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}

func TestSampleText(t *testing.T) {
	m := testmodel.Stories260K(t)
	defer m.Close()
	e, err := engine.Load(cpu.New(0), m)
	if err != nil {
		t.Fatal(err)
	}
	s := e.NewState(64, 16)
	a, err := SampleText(context.Background(), s, 1, 300, 7, func(id int) bool { return id == 2 })
	if err != nil || len(a) != 300 || a[0] != 1 {
		t.Fatalf("%d tokens, first %v, %v", len(a), a[:1], err)
	}
	b, _ := SampleText(context.Background(), s, 1, 300, 7, func(id int) bool { return id == 2 })
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed, different text")
		}
	}
	if _, err := SampleText(context.Background(), s, -1, 10, 1, nil); err == nil {
		t.Fatal("no BOS accepted")
	}
}
