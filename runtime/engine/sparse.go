package engine

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// Budgets turns a plan into run-time budgets for this model, in mode
// plan.ModeTopK or plan.ModeThreshold ("" takes the plan's own): one site
// per plan site, its ID its index. It changes nothing: a state runs under
// the table when it is set as State.Budgets. The model must have been
// loaded with Options.Sparse, and the plan checked against the model
// (plan.Check).
func (m *Model) Budgets(p *plan.Plan, mode plan.Mode) (*backend.Budgets, error) {
	if p == nil {
		return nil, errors.New("budgets: no plan")
	}
	if mode == "" {
		mode = p.Mode
	}
	if _, err := plan.ParseMode(string(mode)); err != nil {
		return nil, fmt.Errorf("budgets: %w", err)
	}
	want := plan.Sites(&m.Config)
	if len(p.Sites) != len(want) {
		return nil, fmt.Errorf("budgets: %d sites for a model with %d", len(p.Sites), len(want))
	}
	scales, err := m.Scales(p.Selection)
	if err != nil {
		return nil, fmt.Errorf("budgets: %w", err)
	}
	sites := make([]backend.Budget, len(p.Sites))
	for i, s := range p.Sites {
		if s.DIn != want[i].DIn || s.DOut != want[i].DOut {
			return nil, fmt.Errorf("budgets: site %d (layer %d %s) is %d×%d, the model's is %d×%d", i, s.Layer, s.Proj, s.DOut, s.DIn, want[i].DOut, want[i].DIn)
		}
		sites[i] = backend.Budget{ID: i, TopK: mode == plan.ModeTopK, K: s.K, Threshold: s.Threshold}
		if scales != nil {
			sites[i].Scale = scales[i]
		}
	}
	return m.SiteBudgets(sites)
}

// Scales returns the score scale of every plan site under selection sel
// (backend.Site.Scale): nil for plan.SelectMagnitude ("" too); for the
// weight-informed selections the column norms ‖W[:,j]‖₂ of each site's
// weight (plan.SelectWINA), or of the stacked weights of the sites that
// share its input (plan.SelectWINAShared: q/k/v, gate/up; the sites of a
// group then share one slice). They are computed in float64 from the
// checkpoint once, on first use, and shared by every table after: never
// write them.
func (m *Model) Scales(sel plan.Selection) ([][]float32, error) {
	switch sel {
	case "", plan.SelectMagnitude:
		return nil, nil
	case plan.SelectWINA, plan.SelectWINAShared:
	default:
		_, err := plan.ParseSelection(string(sel))
		return nil, err
	}
	return m.scales.get(sel, func() ([][]float32, error) { return columnNorms(m.src, sel == plan.SelectWINAShared) })
}

// scaleCache holds the scales of each weight-informed selection, made once.
type scaleCache struct {
	mu  sync.Mutex
	got map[plan.Selection][][]float32
}

func (c *scaleCache) get(sel plan.Selection, build func() ([][]float32, error)) ([][]float32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.got[sel]; ok {
		return s, nil
	}
	s, err := build()
	if err != nil {
		return nil, err
	}
	if c.got == nil {
		c.got = map[plan.Selection][][]float32{}
	}
	c.got[sel] = s
	return s, nil
}

// columnNorms is ‖W[:,j]‖₂ for every input j of every projection of src,
// in plan site order; with shared, the norm over the stacked weights of
// the projections that read the same input (the square root of the sum
// of their squared column norms), one slice for the group.
func columnNorms(src *model.Checkpoint, shared bool) ([][]float32, error) {
	if src == nil {
		return nil, errors.New("weight-informed selection: the model has no checkpoint to take column norms from")
	}
	c := &src.Config
	out := make([][]float32, c.NLayers*int(model.NumProjections))
	for l := range c.NLayers {
		var sq [model.NumProjections][]float64
		for p := range model.NumProjections {
			name := model.ProjName(l, p)
			t, ok := src.Tensors[name]
			if !ok {
				return nil, fmt.Errorf("column norms: no tensor %s", name)
			}
			w, err := t.Float32()
			if err != nil {
				return nil, fmt.Errorf("column norms of %s: %w", name, err)
			}
			in := t.Shape[1]
			s := make([]float64, in)
			for o := range t.Shape[0] {
				for j, v := range w[o*in : (o+1)*in] {
					s[j] += float64(v) * float64(v)
				}
			}
			sq[p] = s
		}
		for p := range model.NumProjections {
			lead := p
			if shared {
				lead = groupLead(p)
			}
			i := plan.Index(l, p)
			if lead != p {
				out[i] = out[plan.Index(l, lead)]
				continue
			}
			n := make([]float32, len(sq[p]))
			for j := range n {
				v := sq[p][j]
				for q := p + 1; shared && q < model.NumProjections && groupLead(q) == p; q++ {
					v += sq[q][j]
				}
				n[j] = float32(math.Sqrt(v))
			}
			out[i] = n
		}
	}
	return out, nil
}

// groupLead is the first projection of the group that reads p's input.
func groupLead(p model.Projection) model.Projection {
	switch p {
	case model.ProjK, model.ProjV:
		return model.ProjQ
	case model.ProjUp:
		return model.ProjGate
	}
	return p
}

// SiteBudgets makes a table of run-time budgets from sites (one per plan
// site, in plan order), which it copies; searches use it to try
// allocations without writing a plan.
func (m *Model) SiteBudgets(sites []backend.Budget) (*backend.Budgets, error) {
	t := &backend.Budgets{Sites: append([]backend.Budget(nil), sites...)}
	if err := m.checkBudgets(t); err != nil {
		return nil, err
	}
	return t, nil
}

// checkBudgets reports whether states of m can run under t (nil: dense).
func (m *Model) checkBudgets(t *backend.Budgets) error {
	switch n := m.Config.NLayers * int(model.NumProjections); {
	case t == nil:
		return nil
	case !m.sparse:
		return errors.New("budgets: the model was loaded dense; load it with Options.Sparse")
	case len(t.Sites) != n:
		return fmt.Errorf("budgets: %d sites for a model with %d", len(t.Sites), n)
	}
	if c, ok := m.Backend.(backend.BudgetsChecker); ok {
		if err := c.CheckBudgets(t); err != nil {
			return fmt.Errorf("budgets on %s: %w", m.Backend.Name(), err)
		}
	}
	return nil
}

// Sparse reports whether the model was loaded so that states can run
// under budgets (Options.Sparse).
func (m *Model) Sparse() bool { return m.sparse }

// Realized returns, per plan site, the fraction of inputs the backend
// dropped on sparse tokens since the last call (NaN where the site ran no
// sparse token), and the parameter-weighted mean over the sites that ran.
// It reads (and so resets) the backend's counts.
func (m *Model) Realized() (perSite []float64, weighted float64) {
	kept, seen := m.Backend.SparseStats()
	return m.RealizedOf(kept, seen, 0)
}

// RealizedOf is Realized over counts read already (Backend.SparseStats),
// for a table whose site IDs start at base (backend.Budgets.CountedAt).
func (m *Model) RealizedOf(kept, seen []int64, base int) (perSite []float64, weighted float64) {
	sites := plan.Sites(&m.Config)
	perSite = make([]float64, len(sites))
	var num, den float64
	for i, s := range sites {
		id := base + i
		if id >= len(seen) || seen[id] == 0 {
			perSite[i] = math.NaN()
			continue
		}
		perSite[i] = 1 - float64(kept[id])/float64(seen[id])
		num += float64(s.Params()) * perSite[i]
		den += float64(s.Params())
	}
	if den == 0 {
		return perSite, math.NaN()
	}
	return perSite, num / den
}
