// Package profile turns a model, its heavy-tail fits and calibration text
// into a sparsity plan: the ActTail pipeline (Pipeline). The pieces live
// below it: htsr fits the weight spectra, alloc turns alphas into budgets,
// calib turns budgets into thresholds; greedy.go searches budgets on data,
// and method.go is the table of allocation methods.
package profile

import (
	"fmt"

	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/profile/htsr"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// Options choose an allocation.
type Options struct {
	Method Method
	alloc.Options
	Xmin htsr.XminMethod
	Mode plan.Mode // plan.ModeTopK ("" too) or plan.ModeThreshold
	// Selection ranks the inputs at run time (plan.Selection; "" is
	// plan.SelectMagnitude). The greedy search scores its moves, and the
	// calibration takes its thresholds, under it.
	Selection plan.Selection
}

// selection is o.Selection, "" read as plan.SelectMagnitude.
func (o Options) selection() plan.Selection {
	if o.Selection == "" {
		return plan.SelectMagnitude
	}
	return o.Selection
}

// sitesOf returns the plan sites of m with the heavy-tail fits filled in
// (fits may be nil).
func sitesOf(m *model.Checkpoint, fits []htsr.Fit) ([]plan.Site, error) {
	sites := plan.Sites(&m.Config)
	if fits == nil {
		return sites, nil
	}
	if len(fits) != len(sites) {
		return nil, fmt.Errorf("%d heavy-tail fits for %d projections", len(fits), len(sites))
	}
	for i, f := range fits {
		s := &sites[i]
		s.Alpha, s.Xmin, s.NTail, s.KS, s.Sigma, s.LambdaMax = f.Alpha, f.Xmin, f.NTail, f.KS, f.Sigma, f.LambdaMax
	}
	return sites, nil
}

// newPlan rounds budgets s to integer K with alloc.Round (so that every
// method realizes the same weighted sparsity at a target) and returns the
// plan. Thresholds are left zero: calib.Calibrate fills them.
func newPlan(m *model.Checkpoint, sites []plan.Site, s []float64, o Options) (*plan.Plan, error) {
	if err := o.Options.Validate(); err != nil {
		return nil, err
	}
	sp, err := specOf(o.Method)
	if err != nil {
		return nil, err
	}
	k, err := alloc.Round(sites, s, o.Target)
	if err != nil {
		return nil, err
	}
	sites = append([]plan.Site(nil), sites...)
	alloc.Apply(sites, s, k)
	mode := o.Mode
	if mode == "" {
		mode = plan.ModeTopK
	}
	p := &plan.Plan{
		Version:   plan.Version,
		Model:     plan.Identify(m),
		Method:    string(o.Method),
		Mode:      mode,
		Selection: o.selection(),
		Target:    o.Target,
		Sites:     sites,
		Params:    plan.Params{SMin: o.SMin, SMax: o.SMax},
	}
	if sp.record != nil {
		sp.record(&p.Params, o)
	}
	p.Realized = alloc.Realized(sites, k) // integer arithmetic: bit-identical across methods
	return p, p.Validate()
}
