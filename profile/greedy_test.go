package profile

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// On stories260K and a slice of its calibration text, the greedy search
// returns allocations whose weighted mean is each level exactly, within
// bounds, and whose calibration loss is no worse than uniform's at the
// same level (greedy starts from uniform below it).
func TestGreedyOnStories(t *testing.T) {
	m, err := llama2c.Load(filepath.Join(testfiles.Stories260K(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, _ := tokenizer.New(m.Vocab)
	raw, err := os.ReadFile(testfiles.Shared(t, "data/tinystories-calib.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(string(raw), true)[:192]
	e, err := engine.LoadWith(cpu.New(0), m, engine.Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	s := e.NewState(96, 96)
	sites := plan.Sites(&m.Config)
	levels := []float64{0.5, 0.6}
	allocs, err := Greedy(context.Background(), s, ids, sites, GreedyOptions{Levels: levels, Start: 0.4, Step: 0.1, Refine: 2})
	if err != nil {
		t.Fatal(err)
	}
	lossAt := func(sp []float64) float64 {
		bs := make([]backend.Budget, len(sites))
		for i, st := range sites {
			bs[i] = backend.Budget{ID: i, TopK: true, K: plan.KeepFor(sp[i], st.DIn)}
		}
		var err error
		if s.Budgets, err = e.SiteBudgets(bs); err != nil {
			t.Fatal(err)
		}
		r, err := eval.Perplexity(context.Background(), s, ids, eval.Options{Ctx: 96, Stride: 96, Sparse: eval.SparseAll})
		if err != nil {
			t.Fatal(err)
		}
		return r.MeanNLL
	}
	for li, lv := range levels {
		a := allocs[li]
		var num, den float64
		for i, st := range sites {
			num += float64(st.Params()) * a[i]
			den += float64(st.Params())
			if a[i] < 0 || a[i] > 0.99 {
				t.Fatalf("level %g site %d: %g outside [0, s_max]", lv, i, a[i])
			}
		}
		if math.Abs(num/den-lv) > 1e-9 {
			t.Fatalf("level %g: weighted mean %g", lv, num/den)
		}
		uni := make([]float64, len(sites))
		for i := range uni {
			uni[i] = lv
		}
		g, u := lossAt(a), lossAt(uni)
		t.Logf("level %g: greedy NLL %.4f, uniform %.4f", lv, g, u)
		if g > u+1e-3 {
			t.Errorf("level %g: greedy calibration loss %.4f above uniform's %.4f", lv, g, u)
		}
	}
	if _, err := Greedy(context.Background(), s, ids, sites, GreedyOptions{Levels: []float64{0.3}, Start: 0.5}); err == nil {
		t.Fatal("start above the level accepted")
	}
}
