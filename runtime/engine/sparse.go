package engine

import (
	"errors"
	"fmt"
	"math"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// SetPlan applies a sparsity plan in mode plan.ModeTopK or
// plan.ModeThreshold ("" takes the plan's own); nil returns to dense. The
// model must have been loaded with Options.Sparse. The plan must have been
// checked against the model (plan.Check).
func (m *Model) SetPlan(p *plan.Plan, mode string) error {
	if p == nil {
		m.sites = nil
		return nil
	}
	if !m.sparse {
		return errors.New("set plan: the model was loaded dense; load it with Options.Sparse")
	}
	if mode == "" {
		mode = p.Mode
	}
	if mode != plan.ModeTopK && mode != plan.ModeThreshold {
		return fmt.Errorf("set plan: mode %q: want %s or %s", mode, plan.ModeTopK, plan.ModeThreshold)
	}
	want := plan.Sites(&m.Config)
	if len(p.Sites) != len(want) {
		return fmt.Errorf("set plan: %d sites for a model with %d", len(p.Sites), len(want))
	}
	sites := make([]backend.Site, len(p.Sites))
	for i, s := range p.Sites {
		if s.DIn != want[i].DIn || s.DOut != want[i].DOut {
			return fmt.Errorf("set plan: site %d (layer %d %s) is %d×%d, the model's is %d×%d", i, s.Layer, s.Proj, s.DOut, s.DIn, want[i].DOut, want[i].DIn)
		}
		sites[i] = backend.Site{ID: i, TopK: mode == plan.ModeTopK, K: s.K, Threshold: s.Threshold}
	}
	return m.install(sites)
}

// install makes sites the budgets, handing them to a backend that keeps
// them on the device (backend.SiteLoader) at once.
func (m *Model) install(sites []backend.Site) error {
	if l, ok := m.Backend.(backend.SiteLoader); ok && sites != nil {
		if err := l.LoadSites(sites); err != nil {
			return fmt.Errorf("load budgets on %s: %w", m.Backend.Name(), err)
		}
	}
	m.sites = sites
	return nil
}

// SetSites installs run-time budgets directly (one per plan site, in plan
// order); calibration searches use it to try allocations quickly.
func (m *Model) SetSites(sites []backend.Site) error {
	if !m.sparse {
		return errors.New("set sites: the model was loaded dense")
	}
	if sites != nil && len(sites) != m.Config.NLayers*int(model.NumProjections) {
		return fmt.Errorf("set sites: %d sites for %d layers", len(sites), m.Config.NLayers)
	}
	return m.install(sites)
}

// Sparse reports whether a plan is applied.
func (m *Model) Sparse() bool { return m.sites != nil }

// Realized returns, per plan site, the fraction of inputs the backend
// dropped on sparse tokens since the last call (NaN where the site ran no
// sparse token), and the parameter-weighted mean over the sites that ran.
func (m *Model) Realized() (perSite []float64, weighted float64) {
	kept, seen := m.Backend.SparseStats()
	sites := plan.Sites(&m.Config)
	perSite = make([]float64, len(sites))
	var num, den float64
	for i, s := range sites {
		if i >= len(seen) || seen[i] == 0 {
			perSite[i] = math.NaN()
			continue
		}
		perSite[i] = 1 - float64(kept[i])/float64(seen[i])
		num += float64(s.Params()) * perSite[i]
		den += float64(s.Params())
	}
	if den == 0 {
		return perSite, math.NaN()
	}
	return perSite, num / den
}

// Sites returns the run-time budgets in force (nil: dense).
func (m *Model) Sites() []backend.Site { return m.sites }
