package engine

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// refTopK keeps the k entries of largest |x| (ties toward lower index).
func refTopK(x []float64, k int) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return math.Abs(x[idx[a]]) > math.Abs(x[idx[b]]) })
	y := make([]float64, len(x))
	for _, i := range idx[:k] {
		y[i] = x[i]
	}
	return y
}

func refThreshold(x []float64, t float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		if math.Abs(v) > t {
			y[i] = v
		}
	}
	return y
}

// randomPlan gives every site a random budget.
func randomPlan(m *model.Model, seed uint64) *plan.Plan {
	r := rand.New(rand.NewPCG(seed, 3))
	p := &plan.Plan{Version: plan.Version, Selection: plan.SelectMagnitude, Model: plan.Identify(m), Method: "random", Mode: plan.ModeTopK, Target: 0.5, Sites: plan.Sites(&m.Config)}
	for i := range p.Sites {
		s := &p.Sites[i]
		s.Sparsity = 0.9 * r.Float64()
		s.K = plan.KeepFor(s.Sparsity, s.DIn)
		s.Threshold = float32(0.5 * r.Float64())
	}
	return p
}

// The sparse engine equals the float64 reference applied to the masked
// inputs, in both modes, for prefill and decode, and dense positions
// before SparseFrom are not masked.
func TestSparseMatchesMaskedReference(t *testing.T) {
	for _, mode := range []plan.Mode{plan.ModeTopK, plan.ModeThreshold} {
		for _, dt := range []model.DType{model.F32, model.BF16} {
			c := smallConfig()
			c.HiddenDim = 172
			m := randomModel(t, c, dt, 5)
			p := randomPlan(m, 11)
			e, err := LoadWith(cpu.New(0), m, Options{Sparse: true})
			if err != nil {
				t.Fatal(err)
			}
			bud, err := e.Budgets(p, mode)
			if err != nil {
				t.Fatal(err)
			}
			tokens := randomTokens(17, c.VocabSize, 4)
			const from = 6
			ref := newRef(m)
			ref.mask = func(l int, pr model.Projection, x []float64) []float64 {
				if ref.pos < from {
					return x
				}
				s := p.Sites[plan.Index(l, pr)]
				if mode == plan.ModeTopK {
					return refTopK(x, s.K)
				}
				return refThreshold(x, float64(s.Threshold))
			}
			V := c.VocabSize
			all := make([]float32, len(tokens)*V)
			s := e.NewState(0, 4)
			s.Budgets, s.SparseFrom = bud, from
			if err := s.Forward(tokens, all, true); err != nil {
				t.Fatal(err)
			}
			for pos, tok := range tokens {
				want := ref.step(tok)
				var scale float64
				for _, w := range want {
					scale = math.Max(scale, math.Abs(w))
				}
				for i, w := range want {
					// Looser than the dense test: an input whose |x| sits at
					// the cut can fall on either side after fp32 rounding;
					// the random thresholds make that rare but possible.
					if d := math.Abs(float64(all[pos*V+i]) - w); d > 1e-3*scale+1e-5 {
						t.Fatalf("%s %s pos %d logit %d: got %g, want %g", mode, dt, pos, i, all[pos*V+i], w)
					}
				}
			}
			per, w := e.Realized()
			if math.IsNaN(w) || w <= 0 {
				t.Fatalf("realized sparsity %g", w)
			}
			if mode == plan.ModeTopK {
				for i, r := range per {
					// sparse positions drop exactly d−K; dense ones are not counted
					st := p.Sites[i]
					want := 1 - float64(st.K)/float64(st.DIn)
					if math.Abs(r-want) > 1e-12 {
						t.Fatalf("site %d realized %g, want %g", i, r, want)
					}
				}
			}
		}
	}
}

// A sparse-loaded model without budgets gives the dense logits; budgets
// that do not fit the model are refused, by the model and by a state.
func TestSparseLoadDenseEqualsDense(t *testing.T) {
	m := randomModel(t, smallConfig(), model.F32, 8)
	tokens := randomTokens(9, 97, 1)
	dense, _ := Load(cpu.New(0), m)
	sp, err := LoadWith(cpu.New(0), m, Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	a, b := make([]float32, 9*97), make([]float32, 9*97)
	dense.NewState(0, 9).Forward(tokens, a, true)
	sp.NewState(0, 9).Forward(tokens, b, true)
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-4 {
			t.Fatalf("logit %d: dense %g, sparse-loaded %g", i, a[i], b[i])
		}
	}
	if _, err := dense.Budgets(randomPlan(m, 1), ""); err == nil {
		t.Fatal("plan accepted on a dense-loaded model")
	}
	if _, err := sp.SiteBudgets(make([]backend.Site, 3)); err == nil {
		t.Fatal("wrong site count accepted")
	}
	bud, err := sp.Budgets(randomPlan(m, 1), "")
	if err != nil {
		t.Fatal(err)
	}
	s := dense.NewState(0, 9)
	s.Budgets = bud
	if err := s.Forward(tokens, a, true); err == nil {
		t.Fatal("a dense-loaded model ran a state under budgets")
	}
	if err := dense.NewBatch(1).Step([]*State{s}, tokens[:1], a); err == nil {
		t.Fatal("a dense-loaded model ran a batch row under budgets")
	}
	s = sp.NewState(0, 9)
	s.Budgets = &backend.Budgets{Sites: bud.Sites[:5]}
	if err := s.Forward(tokens, a, true); err == nil {
		t.Fatal("a state ran under a table of the wrong size")
	}
}
