package engine

import (
	"errors"
	"fmt"
	"math"

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
	sites := make([]backend.Budget, len(p.Sites))
	for i, s := range p.Sites {
		if s.DIn != want[i].DIn || s.DOut != want[i].DOut {
			return nil, fmt.Errorf("budgets: site %d (layer %d %s) is %d×%d, the model's is %d×%d", i, s.Layer, s.Proj, s.DOut, s.DIn, want[i].DOut, want[i].DIn)
		}
		sites[i] = backend.Budget{ID: i, TopK: mode == plan.ModeTopK, K: s.K, Threshold: s.Threshold}
	}
	return m.SiteBudgets(sites)
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
