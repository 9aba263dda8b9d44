// Package sweep runs `acttail-gpu bench --sparsity-sweep`: for every
// sparsity level and allocation method it builds a plan, applies it, and
// measures perplexity and realized sparsity on each evaluation text, with
// the relative change against uniform allocation at the same level as the
// headline; and, on the same engine, prefill and batch-1 decode speed,
// decode latency and energy per token, with the decode speed-up against
// the dense row.
package sweep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/acttail/acttail-gpu/profile"
	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/profile/calib"
	"github.com/acttail/acttail-gpu/profile/htsr"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

// Config is one sweep.
type Config struct {
	Levels       []float64 // 0 is the dense baseline
	Methods      []string  // uniform, acttail, greedy
	Eps          []float64
	Directions   []alloc.Direction
	BlockAverage bool
	SMin, SMax   float64
	Mode         string // plan.ModeTopK or plan.ModeThreshold
	Ctx, Stride  int
	Sparse       string // eval.SparseAll, SparseSecondHalf or SparseNone
	CalibPasses  int
	Greedy       profile.GreedyOptions // Levels, Seed and Candidates are set by the sweep
	// GreedyTokens caps the calibration tokens the greedy search scores
	// each candidate on (0: all); thresholds still use all of them.
	GreedyTokens int
	Speed        SpeedOptions
}

// NeedsCalib says why c needs calibration text, or "" when it does not:
// threshold mode calibrates its cuts on it and the greedy method searches
// on it; the dense row, uniform and ActTail in top-k mode need none.
func (c Config) NeedsCalib() string {
	if !slices.ContainsFunc(c.Levels, func(l float64) bool { return l > 0 }) {
		return ""
	}
	switch {
	case c.Mode == plan.ModeThreshold:
		return "threshold mode calibrates its cuts on calibration text"
	case slices.Contains(c.Methods, profile.MethodGreedy):
		return "the greedy method searches budgets on calibration text"
	}
	return ""
}

// Data is one evaluation text, tokenized.
type Data struct {
	Name   string
	Tokens []int
}

// Result is one (row, text) measurement.
type Result struct {
	Data       string  `json:"data"`
	Perplexity float64 `json:"perplexity"`
	MeanNLL    float64 `json:"mean_nll"`
	Realized   float64 `json:"realized_sparsity"` // measured on the sparse tokens
	VsUniform  float64 `json:"vs_uniform"`        // (ppl − ppl_uniform) / ppl_uniform; NaN for uniform and dense
	Seconds    float64 `json:"seconds"`
}

// Row is one (level, method) plan and its results.
type Row struct {
	Level     float64    `json:"level"`
	Method    string     `json:"method"`
	Label     string     `json:"label"`
	Eps       float64    `json:"eps,omitempty"`
	Direction string     `json:"direction,omitempty"`
	Planned   float64    `json:"planned_sparsity"` // parameter-weighted, integer k
	Results   []Result   `json:"results"`
	Speed     *Speed     `json:"speed,omitempty"` // nil when the sweep ran without speed
	Plan      *plan.Plan `json:"-"`
}

// Run executes the sweep. e must be loaded sparse from m; calib are the
// calibration tokens (threshold mode and the greedy search need them, the
// rest of the sweep does not); fits are the heavy-tail fits of m. data may
// be empty for a speed-only sweep. log gets one aligned line per finished
// row and the greedy search's levels, under a progress bar over the rows.
//
// The speed runs take their prompt from the start of the first text (data,
// then calibration) that is long enough, else fixed pseudo-random ids.
func Run(ctx context.Context, e *engine.Model, m *model.Model, calibTokens []int, data []Data, fits []htsr.Fit, c Config, log io.Writer) ([]Row, error) {
	if why := c.NeedsCalib(); why != "" && len(calibTokens) == 0 {
		return nil, fmt.Errorf("sweep: %s", why)
	}
	if len(data) == 0 && !c.Speed.On {
		return nil, errors.New("sweep: nothing to measure: no evaluation text and speed off")
	}
	sites, err := profile.Sites(m, fits)
	if err != nil {
		return nil, err
	}
	s := e.NewState(c.Ctx, 128)
	var speedState *engine.State
	var prompt []int
	if c.Speed.On {
		if err := c.Speed.Check(e.Config.SeqLen); err != nil {
			return nil, err
		}
		speedState = e.NewState(c.Speed.PrefillTokens+max(c.Speed.DecodeTokens, c.Speed.Warmup), c.Speed.PrefillTokens)
		var texts [][]int
		for _, d := range data {
			texts = append(texts, d.Tokens)
		}
		prompt = speedPrompt(c.Speed.PrefillTokens, e.Config.VocabSize, append(texts, calibTokens)...)
	}
	levels := slices.Clone(c.Levels)
	slices.Sort(levels)
	labels := c.labels()
	width := 0
	for _, l := range labels {
		width = max(width, len(l))
	}
	var bar *progress.Bar // over the rows, once the greedy search is done
	defer func() { bar.Finish() }()
	var rows []Row
	measure := func(r *Row) error {
		if r.Plan != nil {
			if c.Mode == plan.ModeThreshold {
				if _, err := calib.Calibrate(ctx, s, calibTokens, r.Plan.Sites, c.CalibPasses); err != nil {
					return err
				}
			}
			if err := e.SetPlan(r.Plan, c.Mode); err != nil {
				return err
			}
		} else {
			e.SetPlan(nil, "")
		}
		for _, d := range data {
			e.Realized() // reset the counters
			res, err := eval.Perplexity(ctx, s, d.Tokens, eval.Options{Ctx: c.Ctx, Stride: c.Stride, Sparse: c.Sparse})
			if err != nil {
				return fmt.Errorf("%s on %s: %w", r.Label, d.Name, err)
			}
			_, w := e.Realized()
			if r.Plan == nil || math.IsNaN(w) {
				w = 0
			}
			r.Results = append(r.Results, Result{Data: d.Name, Perplexity: res.Perplexity, MeanNLL: res.MeanNLL, Realized: w, VsUniform: math.NaN(), Seconds: res.Seconds})
		}
		if c.Speed.On {
			sp, err := measureSpeed(ctx, speedState, prompt, c.Speed)
			if err != nil {
				return fmt.Errorf("%s: speed: %w", r.Label, err)
			}
			r.Speed = sp
		}
		line := fmt.Sprintf("level %.2f  %-*s", r.Level, width, r.Label)
		for _, x := range r.Results {
			line += fmt.Sprintf("  %s ppl %11.4f", x.Data, x.Perplexity)
		}
		if r.Speed != nil {
			line += fmt.Sprintf("  decode %9.1f tok/s", r.Speed.DecodeTPS)
		}
		bar.Println(line)
		bar.Add(1)
		return nil
	}
	newRow := func(level float64, method, label string, budgets []float64, o profile.Options) (Row, error) {
		p, err := profile.NewPlan(m, sites, budgets, o)
		if err != nil {
			return Row{}, fmt.Errorf("%s at %g: %w", label, level, err)
		}
		return Row{Level: level, Method: method, Label: label, Eps: o.Eps, Direction: string(o.Direction), Planned: p.Realized, Plan: p}, nil
	}
	base := alloc.Options{BlockAverage: c.BlockAverage, SMin: c.SMin, SMax: c.SMax}
	opts := func(method string, level, eps float64, d alloc.Direction) profile.Options {
		o := profile.Options{Method: method, Mode: c.Mode, Options: base}
		o.Target, o.Eps, o.Direction = level, eps, d
		return o
	}
	// The greedy search walks all levels in one path; run it first.
	var greedy [][]float64
	var sparseLevels []float64
	for _, lv := range levels {
		if lv > 0 {
			sparseLevels = append(sparseLevels, lv)
		}
	}
	if slices.Contains(c.Methods, profile.MethodGreedy) && len(sparseLevels) > 0 {
		g := c.Greedy
		g.Levels = sparseLevels
		if g.Start <= 0 || g.Start > sparseLevels[0] {
			g.Start = sparseLevels[0] * 0.6
		}
		g.Candidates = func(level float64) ([][]float64, error) {
			var out [][]float64
			for _, eps := range c.Eps {
				for _, d := range c.Directions {
					b, err := profile.Budgets(sites, opts(profile.MethodActTail, level, eps, d))
					if err != nil {
						return nil, err
					}
					out = append(out, b)
				}
			}
			return out, nil
		}
		g.Bar = progress.New(log, profile.GreedyBarTotal, "greedy search")
		g.Progress = func(level, loss float64) {
			g.Bar.Println(fmt.Sprintf("greedy: level %.2f reached, calibration NLL %.4f", level, loss))
		}
		gt := calibTokens
		if c.GreedyTokens > 0 && len(gt) > c.GreedyTokens {
			gt = gt[:c.GreedyTokens]
			if len(calibTokens)-c.GreedyTokens >= 2 {
				g.Holdout = calibTokens[c.GreedyTokens:] // the rest checks the refinement
			}
		}
		greedy, err = profile.Greedy(ctx, s, gt, sites, g)
		g.Bar.Finish()
		if err != nil {
			return nil, err
		}
	}
	bar = progress.New(log, int64(c.rowCount()), "sweep rows")
	for _, lv := range levels {
		if lv == 0 {
			r := Row{Level: 0, Method: "dense", Label: "dense"}
			if err := measure(&r); err != nil {
				return nil, err
			}
			rows = append(rows, r)
			continue
		}
		var group []Row
		for _, method := range c.Methods {
			switch method {
			case profile.MethodUniform:
				b, err := profile.Budgets(sites, opts(method, lv, 0, ""))
				if err != nil {
					return nil, err
				}
				r, err := newRow(lv, method, "uniform", b, opts(method, lv, 0, ""))
				if err != nil {
					return nil, err
				}
				group = append(group, r)
			case profile.MethodActTail:
				for _, eps := range c.Eps {
					for _, d := range c.Directions {
						o := opts(method, lv, eps, d)
						b, err := profile.Budgets(sites, o)
						if err != nil {
							return nil, err
						}
						r, err := newRow(lv, method, actTailLabel(eps, d), b, o)
						if err != nil {
							return nil, err
						}
						group = append(group, r)
					}
				}
			case profile.MethodGreedy:
				i := slices.Index(sparseLevels, lv)
				r, err := newRow(lv, method, "greedy", greedy[i], opts(method, lv, 0, ""))
				if err != nil {
					return nil, err
				}
				group = append(group, r)
			default:
				return nil, fmt.Errorf("sweep: unknown method %q", method)
			}
		}
		for i := range group {
			if err := measure(&group[i]); err != nil {
				return nil, err
			}
		}
		compareToUniform(group)
		rows = append(rows, group...)
	}
	compareToDense(rows)
	return rows, nil
}

// compareToUniform fills VsUniform for the rows of one level.
func compareToUniform(group []Row) {
	var uni *Row
	for i := range group {
		if group[i].Method == profile.MethodUniform {
			uni = &group[i]
		}
	}
	if uni == nil {
		return
	}
	for i := range group {
		if &group[i] == uni {
			continue
		}
		for j := range group[i].Results {
			u := uni.Results[j].Perplexity
			group[i].Results[j].VsUniform = (group[i].Results[j].Perplexity - u) / u
		}
	}
}

// actTailLabel names an ActTail row.
func actTailLabel(eps float64, d alloc.Direction) string {
	return fmt.Sprintf("acttail eps=%g %s", eps, shortDir(d))
}

// labels lists the row labels the sweep will make.
func (c Config) labels() []string {
	out := []string{"dense"}
	for _, m := range c.Methods {
		switch m {
		case profile.MethodActTail:
			for _, eps := range c.Eps {
				for _, d := range c.Directions {
					out = append(out, actTailLabel(eps, d))
				}
			}
		default:
			out = append(out, m)
		}
	}
	return out
}

// rowCount is the number of rows the sweep will measure: one at level 0,
// one a label at every other level.
func (c Config) rowCount() int {
	n := 0
	for _, lv := range c.Levels {
		if lv == 0 {
			n++
		} else {
			n += len(c.labels()) - 1
		}
	}
	return n
}

func shortDir(d alloc.Direction) string {
	if d == alloc.SmallerAlphaSparser {
		return "smaller-alpha-sparser"
	}
	return "larger-alpha-sparser"
}
