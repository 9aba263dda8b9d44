package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
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

// checkMasked runs tokens through s as one prompt and checks every
// position's logits against the reference (with its mask) to 1e-3 of the
// largest logit. Looser than the dense test: an input whose score sits at
// the cut can fall on either side after fp32 rounding; the random budgets
// make that rare but possible.
func checkMasked(t *testing.T, s *State, ref *refModel, tokens []int, what string) {
	t.Helper()
	V := s.Model().Config.VocabSize
	all := make([]float32, len(tokens)*V)
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
			if d := math.Abs(float64(all[pos*V+i]) - w); d > 1e-3*scale+1e-5 {
				t.Fatalf("%s pos %d logit %d: got %g, want %g", what, pos, i, all[pos*V+i], w)
			}
		}
	}
}

// randomPlan gives every site a random budget.
func randomPlan(m *model.Checkpoint, seed uint64) *plan.Plan {
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
			s := e.NewState(0, 4)
			s.Budgets, s.SparseFrom = bud, from
			checkMasked(t, s, ref, tokens, fmt.Sprintf("%s %s", mode, dt))
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
	if _, err := sp.SiteBudgets(make([]backend.Budget, 3)); err == nil {
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

// refNorms is ‖W[:,j]‖₂ of every site's weight in float64, over the
// weights of every site in its group when shared (q/k/v, gate/up).
func refNorms(r *refModel, shared bool) [][]float64 {
	group := func(p model.Projection) []model.Projection {
		switch {
		case !shared:
			return []model.Projection{p}
		case p <= model.ProjV:
			return []model.Projection{model.ProjQ, model.ProjK, model.ProjV}
		case p == model.ProjGate || p == model.ProjUp:
			return []model.Projection{model.ProjGate, model.ProjUp}
		}
		return []model.Projection{p}
	}
	var out [][]float64
	for l := range r.c.NLayers {
		for p := range model.NumProjections {
			out = append(out, nil)
			for _, q := range group(p) {
				dout, din := q.Shape(&r.c)
				w := r.w[model.ProjName(l, q)]
				if out[len(out)-1] == nil {
					out[len(out)-1] = make([]float64, din)
				}
				for o := range dout {
					for j := range din {
						out[len(out)-1][j] += w[o*din+j] * w[o*din+j]
					}
				}
			}
			for j, v := range out[len(out)-1] {
				out[len(out)-1][j] = math.Sqrt(v)
			}
		}
	}
	return out
}

// keepScored keeps the x_j whose score is among the k largest (ties
// toward lower index), or above t when k < 0.
func keepScored(x, score []float64, k int, t float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	if k < 0 {
		idx = idx[:0]
		for j, s := range score {
			if s > t {
				idx = append(idx, j)
			}
		}
	} else {
		sort.SliceStable(idx, func(a, b int) bool { return score[idx[a]] > score[idx[b]] })
		idx = idx[:k]
	}
	y := make([]float64, len(x))
	for _, i := range idx {
		y[i] = x[i]
	}
	return y
}

// Under a weight-informed plan the sparse engine equals the float64
// reference that keeps inputs by |x_j|·‖W[:,j]‖₂ (norms per projection,
// or shared by the projections of one input), in both modes; and the
// shared selection gives the sites of a group one scale vector.
func TestWeightInformedMatchesMaskedReference(t *testing.T) {
	c := smallConfig()
	c.HiddenDim = 172
	m := randomModel(t, c, model.BF16, 6)
	e, err := LoadWith(cpu.New(0), m, Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range []plan.Selection{plan.SelectWINA, plan.SelectWINAShared} {
		ref := newRef(m)
		norms := refNorms(ref, sel == plan.SelectWINAShared)
		p := randomPlan(m, 12)
		p.Selection = sel
		for i := range p.Sites { // thresholds in the scores' units
			var mean float64
			for _, v := range norms[i] {
				mean += v / float64(len(norms[i]))
			}
			p.Sites[i].Threshold *= float32(mean)
		}
		for _, mode := range []plan.Mode{plan.ModeTopK, plan.ModeThreshold} {
			bud, err := e.Budgets(p, mode)
			if err != nil {
				t.Fatal(err)
			}
			if q, k := bud.Sites[plan.Index(1, model.ProjQ)].Scale, bud.Sites[plan.Index(1, model.ProjK)].Scale; (&q[0] == &k[0]) != (sel == plan.SelectWINAShared) {
				t.Fatalf("%s: q and k share their scale: %v", sel, &q[0] == &k[0])
			}
			ref := newRef(m)
			ref.mask = func(l int, pr model.Projection, x []float64) []float64 {
				i := plan.Index(l, pr)
				score := make([]float64, len(x))
				for j, v := range x {
					score[j] = math.Abs(v) * norms[i][j]
				}
				if mode == plan.ModeTopK {
					return keepScored(x, score, p.Sites[i].K, 0)
				}
				return keepScored(x, score, -1, float64(p.Sites[i].Threshold))
			}
			tokens := randomTokens(9, c.VocabSize, 7)
			s := e.NewState(0, 4)
			s.Budgets = bud
			checkMasked(t, s, ref, tokens, fmt.Sprintf("%s %s", sel, mode))
		}
	}
	if _, err := e.Scales("l2"); err == nil {
		t.Fatal("unknown selection accepted")
	}
}

// refusing is a CPU backend that cannot run weight-informed budgets, as
// the CUDA backend cannot yet.
type refusing struct{ *cpu.Backend }

func (refusing) CheckBudgets(t *backend.Budgets) error {
	for _, s := range t.Sites {
		if s.Scale != nil {
			return errors.New("no scales here")
		}
	}
	return nil
}

// A backend that cannot run a table (backend.BudgetsChecker) has it
// refused when the table is made.
func TestBudgetsChecker(t *testing.T) {
	m := randomModel(t, smallConfig(), model.F32, 9)
	e, err := LoadWith(refusing{cpu.New(1)}, m, Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	p := randomPlan(m, 2)
	if _, err := e.Budgets(p, ""); err != nil {
		t.Fatalf("magnitude plan: %v", err)
	}
	p.Selection = plan.SelectWINA
	if _, err := e.Budgets(p, ""); err == nil || !strings.Contains(err.Error(), "no scales here") {
		t.Fatalf("wina plan on a refusing backend: %v", err)
	}
}
