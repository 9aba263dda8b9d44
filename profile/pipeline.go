package profile

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/profile/calib"
	"github.com/acttail/acttail-gpu/profile/htsr"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// Pipeline is the ActTail pipeline on one model: heavy-tail fits →
// budgets (a method's closed form, or a search on calibration text) →
// a plan (budgets rounded to integer k) → thresholds calibrated on the
// calibration text. `acttail-gpu profile` and the benchmark sweep both
// run it. Make is the whole pipeline; Budgets, Plan and Calibrate are
// its steps, in that order.
//
// The search and the calibration run on the pipeline's state, under
// budgets of their own; its Budgets are left as they were.
type Pipeline struct {
	model *model.Checkpoint
	state *engine.State
	sites []plan.Site // the model's, fits filled in
	calib []int

	// CalibFile names the calibration text in the plans it calibrates
	// (plan.Calibration).
	CalibFile string
	// CalibPasses are the refining passes of calib.Calibrate.
	CalibPasses int
	// CalibrateTopK calibrates the thresholds of top-k plans too, so
	// that a plan file can also run in threshold mode; without it only
	// threshold plans are calibrated.
	CalibrateTopK bool

	// Search holds the search's settings (Greedy). The pipeline sets its
	// Levels, Candidates and Holdout, and its Start where it is 0 or
	// above the lowest level: to 0.6 × the lowest level.
	Search GreedyOptions
	// SearchTokens caps the calibration tokens the search scores moves on
	// (0: all); the rest, if two or more, are its Holdout.
	SearchTokens int
	// Seeds are the ActTail settings whose allocations the search also
	// starts from at each level (but ε = 0, which is uniform, and uniform
	// it always tries).
	Seeds Grid
}

// New is the pipeline on model m, with fits its heavy-tail fits (nil
// when no method run needs them: FitsFor), s a state of m on an engine
// loaded sparse, and calib the calibration tokens (nil when no plan made
// needs them: NeedsCalib).
func New(m *model.Checkpoint, fits []htsr.Fit, s *engine.State, calib []int) (*Pipeline, error) {
	sites, err := sitesOf(m, fits)
	if err != nil {
		return nil, err
	}
	return &Pipeline{model: m, state: s, sites: sites, calib: calib}, nil
}

// Make runs the whole pipeline for o at each of levels (o.Target is each
// level in turn): one plan per level, in the order of levels.
func (p *Pipeline) Make(ctx context.Context, o Options, levels []float64) ([]*plan.Plan, error) {
	budgets, err := p.Budgets(ctx, o, levels)
	if err != nil {
		return nil, err
	}
	plans := make([]*plan.Plan, len(levels))
	for i, lv := range levels {
		o.Target = lv
		if plans[i], err = p.Plan(o, budgets[i]); err != nil {
			return nil, fmt.Errorf("%s at %g: %w", o.Label(), lv, err)
		}
		if err := p.Calibrate(ctx, plans[i]); err != nil {
			return nil, err
		}
	}
	return plans, nil
}

// Budgets returns the sparsity of every site under o at each of levels:
// the method's closed form at each, or one search through them all.
func (p *Pipeline) Budgets(ctx context.Context, o Options, levels []float64) ([][]float64, error) {
	sp, err := specOf(o.Method)
	if err != nil {
		return nil, err
	}
	if sp.search == nil || len(levels) == 0 {
		out := make([][]float64, len(levels))
		for i, lv := range levels {
			o.Target = lv
			if out[i], err = sp.allocate(p.sites, o); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	// A search walks its levels upwards, once each.
	walk := slices.Clone(levels)
	slices.Sort(walk)
	walk = slices.Compact(walk)
	found, err := sp.search(ctx, p, o, walk)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(levels))
	for i, lv := range levels {
		j, _ := slices.BinarySearch(walk, lv)
		out[i] = slices.Clone(found[j])
	}
	return out, nil
}

// Plan rounds budgets s, found under o, into a plan at o.Target.
// Thresholds are left zero: Calibrate fills them.
func (p *Pipeline) Plan(o Options, s []float64) (*plan.Plan, error) {
	return newPlan(p.model, p.sites, s, o)
}

// Calibrate sets the thresholds of pl from the calibration text, if pl
// runs in threshold mode or CalibrateTopK is set.
func (p *Pipeline) Calibrate(ctx context.Context, pl *plan.Plan) error {
	if pl.Mode != plan.ModeThreshold && !p.CalibrateTopK {
		return nil
	}
	if len(p.calib) == 0 {
		return errors.New("calibrating thresholds: no calibration text")
	}
	pl.Calibration = &plan.Calibration{File: p.CalibFile, Tokens: len(p.calib)}
	_, err := calib.Calibrate(ctx, p.state, p.calib, pl.Sites, pl.Selection, p.CalibPasses)
	return err
}

// greedySearch is MethodGreedy's search: Greedy on the calibration text,
// seeded by p.Seeds.
func greedySearch(ctx context.Context, p *Pipeline, o Options, levels []float64) ([][]float64, error) {
	g := p.Search
	g.Levels, g.Selection = levels, o.Selection
	if len(levels) > 0 && (g.Start <= 0 || g.Start > levels[0]) {
		g.Start = levels[0] * 0.6
	}
	g.Candidates = p.seeds(o.Options)
	tokens := p.calib
	if n := p.SearchTokens; n > 0 && len(tokens) > n {
		tokens = tokens[:n]
		if len(p.calib)-n >= 2 {
			g.Holdout = p.calib[n:] // the rest checks the refinement
		}
	}
	return Greedy(ctx, p.state, tokens, p.sites, g)
}

// seeds returns, for a level, the ActTail allocations of p.Seeds there,
// with base's other settings.
func (p *Pipeline) seeds(base alloc.Options) func(level float64) ([][]float64, error) {
	return func(level float64) ([][]float64, error) {
		var out [][]float64
		for _, eps := range p.Seeds.Eps {
			if eps == 0 {
				continue
			}
			for _, d := range p.Seeds.Directions {
				o := base
				o.Target, o.Eps, o.Direction = level, eps, d
				s, err := alloc.ActTail(p.sites, o)
				if err != nil {
					return nil, err
				}
				out = append(out, s)
			}
		}
		return out, nil
	}
}
