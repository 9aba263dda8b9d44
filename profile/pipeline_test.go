package profile

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/synth"
)

// Every row of the method table makes budgets one way, and ParseMethod
// reads back every name Methods lists; anything else is refused with
// the list.
func TestMethodTable(t *testing.T) {
	for _, sp := range methods {
		if (sp.allocate == nil) == (sp.search == nil) {
			t.Errorf("%s: want exactly one of allocate and search", sp.name)
		}
	}
	for _, m := range Methods() {
		if got, err := ParseMethod(string(m)); err != nil || got != m {
			t.Errorf("ParseMethod(%q) = %q, %v", m, got, err)
		}
	}
	for _, s := range []string{"", "magic", "Uniform"} {
		if _, err := ParseMethod(s); err == nil || !strings.Contains(err.Error(), "uniform, acttail or greedy") {
			t.Errorf("ParseMethod(%q): %v", s, err)
		}
	}
	if MethodUniform.NeedsFits() || !MethodActTail.NeedsFits() || !MethodGreedy.NeedsFits() || Method("magic").NeedsFits() {
		t.Error("NeedsFits: want acttail and greedy only")
	}
	if MethodUniform.Searches() || MethodActTail.Searches() || !MethodGreedy.Searches() {
		t.Error("Searches: want greedy only")
	}
}

func TestNeedsCalib(t *testing.T) {
	for _, tc := range []struct {
		methods []Method
		mode    plan.Mode
		want    string // in the reason; "" for none
	}{
		{[]Method{MethodUniform, MethodActTail}, plan.ModeTopK, ""},
		{[]Method{MethodUniform, MethodActTail}, "", ""},
		{[]Method{MethodUniform}, plan.ModeThreshold, "threshold mode"},
		{[]Method{MethodUniform, MethodGreedy}, plan.ModeTopK, "the greedy method searches"},
	} {
		got := NeedsCalib(tc.methods, tc.mode)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("NeedsCalib(%v, %q) = %q, want %q", tc.methods, tc.mode, got, tc.want)
		}
	}
}

// A sweep runs ActTail at every ε × direction and the other methods once,
// with ActTail's settings cleared; the labels name the settings.
func TestVariantsAndLabels(t *testing.T) {
	g := Grid{Eps: []float64{0.1, 0.3}, Directions: []alloc.Direction{alloc.LargerAlphaSparser, alloc.SmallerAlphaSparser}}
	base := Options{Mode: plan.ModeThreshold, Options: alloc.Options{SMax: 0.9, Eps: 0.5, Direction: alloc.SmallerAlphaSparser}}
	var labels []string
	for _, m := range Methods() {
		base.Method = m
		vs, err := Variants(base, g)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range vs {
			if o.Mode != plan.ModeThreshold || o.SMax != 0.9 || o.Method != m {
				t.Errorf("%s: variant %+v lost the base settings", m, o)
			}
			labels = append(labels, o.Label())
		}
	}
	want := []string{"uniform",
		"acttail eps=0.1 larger-alpha-sparser", "acttail eps=0.1 smaller-alpha-sparser",
		"acttail eps=0.3 larger-alpha-sparser", "acttail eps=0.3 smaller-alpha-sparser", "greedy"}
	if !slices.Equal(labels, want) {
		t.Errorf("labels %q, want %q", labels, want)
	}
	if vs, _ := Variants(Options{Method: MethodGreedy, Options: alloc.Options{Eps: 0.5, Direction: alloc.SmallerAlphaSparser}}, g); vs[0].Eps != 0 || vs[0].Direction != "" {
		t.Errorf("greedy variant keeps ActTail's settings: %+v", vs[0])
	}
	if _, err := Variants(Options{Method: "magic"}, g); err == nil {
		t.Error("Variants of an unknown method")
	}
}

// tinyPipeline is the pipeline on a random-weight model, with fits.
func tinyPipeline(t *testing.T) (*Pipeline, *model.Checkpoint) {
	t.Helper()
	cfg := model.Config{Arch: "llama", Dim: 64, HiddenDim: 96, NLayers: 2, NHeads: 4, NKVHeads: 2, HeadDim: 16,
		VocabSize: 97, SeqLen: 64, NormEps: 1e-5, RopeTheta: 10000}
	m, err := synth.New(cfg, model.F32, 3)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.LoadWith(cpu.New(1), m, engine.Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	fits, err := FitsFor(context.Background(), m, []Method{MethodActTail}, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	calibTokens := make([]int, 80)
	for i := range calibTokens {
		calibTokens[i] = (7*i + 3) % cfg.VocabSize
	}
	p, err := New(m, fits, e.NewState(32, 32), calibTokens)
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

// Make returns a plan per level, in the order asked, that realizes the
// level; it calibrates thresholds for threshold plans, and for top-k
// plans only with CalibrateTopK.
func TestMake(t *testing.T) {
	p, m := tinyPipeline(t)
	p.CalibFile, p.CalibPasses = "calib.txt", 1
	levels := []float64{0.7, 0.3}
	for _, tc := range []struct {
		mode      plan.Mode
		calibTopK bool
		calibrate bool
	}{{plan.ModeTopK, false, false}, {plan.ModeTopK, true, true}, {plan.ModeThreshold, false, true}} {
		p.CalibrateTopK = tc.calibTopK
		o := Options{Method: MethodActTail, Mode: tc.mode, Options: alloc.Options{Eps: 0.3}}
		plans, err := p.Make(context.Background(), o, levels)
		if err != nil {
			t.Fatal(err)
		}
		for i, pl := range plans {
			if err := pl.Check(m); err != nil {
				t.Fatal(err)
			}
			if pl.Target != levels[i] || pl.Mode != tc.mode || pl.Method != "acttail" || pl.Params.Eps != 0.3 {
				t.Errorf("%s plan %d: target %g, mode %s, method %s, eps %g", tc.mode, i, pl.Target, pl.Mode, pl.Method, pl.Params.Eps)
			}
			calibrated := pl.Sites[0].Threshold > 0 && pl.Calibration != nil && pl.Calibration.File == "calib.txt"
			if calibrated != tc.calibrate {
				t.Errorf("%s (calibrate top-k %v) plan %d: calibrated %v", tc.mode, tc.calibTopK, i, calibrated)
			}
		}
	}
	if _, err := p.Make(context.Background(), Options{Method: "magic"}, levels); err == nil {
		t.Error("an unknown method made plans")
	}
}

// A weight-informed plan names its selection and its label says it; its
// threshold calibration and greedy search run under it.
func TestMakeWeightInformed(t *testing.T) {
	p, m := tinyPipeline(t)
	p.CalibPasses = 1
	p.Search = GreedyOptions{Step: 0.1, Refine: -1}
	for _, o := range []Options{
		{Method: MethodActTail, Mode: plan.ModeThreshold, Selection: plan.SelectWINAShared, Options: alloc.Options{Eps: 0.3}},
		{Method: MethodGreedy, Mode: plan.ModeTopK, Selection: plan.SelectWINA},
	} {
		plans, err := p.Make(context.Background(), o, []float64{0.5})
		if err != nil {
			t.Fatal(err)
		}
		pl := plans[0]
		if err := pl.Check(m); err != nil || pl.Selection != o.Selection || !strings.HasSuffix(o.Label(), " +"+string(o.Selection)) {
			t.Fatalf("%s: selection %q, label %q, %v", o.Method, pl.Selection, o.Label(), err)
		}
		if o.Mode == plan.ModeThreshold && !(pl.Sites[0].Threshold > 0) {
			t.Errorf("%s: threshold plan not calibrated", o.Label())
		}
	}
	if (Options{Method: MethodUniform}).Label() != "uniform" {
		t.Error("magnitude selection shows in the label")
	}
}

// Budgets hands a search its levels sorted and once each, and returns
// its allocations in the order of the levels asked for.
func TestBudgetsSearchOrder(t *testing.T) {
	p, _ := tinyPipeline(t)
	var walked []float64
	methods = append(methods, spec{name: "fake", search: func(_ context.Context, p *Pipeline, _ Options, levels []float64) ([][]float64, error) {
		walked = levels
		out := make([][]float64, len(levels))
		for i, lv := range levels {
			out[i] = make([]float64, len(p.sites))
			for j := range out[i] {
				out[i][j] = lv
			}
		}
		return out, nil
	}})
	defer func() { methods = methods[:len(methods)-1] }()
	got, err := p.Budgets(context.Background(), Options{Method: "fake"}, []float64{0.6, 0.2, 0.6, 0.4})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(walked, []float64{0.2, 0.4, 0.6}) {
		t.Errorf("the search walked %v", walked)
	}
	for i, lv := range []float64{0.6, 0.2, 0.6, 0.4} {
		if got[i][0] != lv {
			t.Errorf("budgets %d are for level %g, want %g", i, got[i][0], lv)
		}
	}
	if got, err := p.Budgets(context.Background(), Options{Method: "fake"}, nil); err != nil || len(got) != 0 {
		t.Errorf("no levels: %v, %v", got, err)
	}
}
