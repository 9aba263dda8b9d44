// Package sweep runs `acttail-gpu bench --sparsity-sweep`: for every
// sparsity level and allocation method it builds a plan, applies it, and
// measures perplexity and realized sparsity on each evaluation text, with
// the relative change against uniform allocation at the same level as the
// headline; and, on the same engine, prefill and batch-1 decode speed,
// decode latency and energy per token, with the decode speed-up against
// the dense row. The plans come from the one ActTail pipeline
// (profile.Pipeline).
package sweep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/acttail/acttail-gpu/profile"
	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/profile/htsr"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

// Config is one sweep.
type Config struct {
	Levels       []float64        // 0 is the dense baseline
	Methods      []profile.Method // uniform, acttail, greedy
	Eps          []float64
	Directions   []alloc.Direction
	BlockAverage bool
	SMin, SMax   float64
	Mode         plan.Mode // plan.ModeTopK or plan.ModeThreshold
	// Selections are the run-time rankings every method's variants run
	// under (plan.Selection; none: magnitude alone).
	Selections  []plan.Selection
	Ctx, Stride int
	Sparse      string // eval.SparseAll, SparseSecondHalf or SparseNone
	CalibPasses int
	Greedy      profile.GreedyOptions // the pipeline sets Levels, Candidates, Holdout and a zero Start (profile.Pipeline.Search)
	// GreedyTokens caps the calibration tokens the greedy search scores
	// each candidate on (0: all); thresholds still use all of them.
	GreedyTokens int
	Speed        SpeedOptions
}

// NeedsCalib says why c needs calibration text, or "" when it does not
// (profile.NeedsCalib): the dense row, uniform and ActTail in top-k mode
// need none.
func (c Config) NeedsCalib() string {
	if !slices.ContainsFunc(c.Levels, func(l float64) bool { return l > 0 }) {
		return ""
	}
	return profile.NeedsCalib(c.Methods, c.Mode)
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
	Level     float64 `json:"level"`
	Method    string  `json:"method"` // "dense" or a profile.Method
	Label     string  `json:"label"`
	Selection string  `json:"selection,omitempty"` // plan.Selection; "" for dense
	Eps       float64 `json:"eps,omitempty"`
	Direction string  `json:"direction,omitempty"`
	Planned   float64 `json:"planned_sparsity"` // parameter-weighted, integer k
	// ProfileSeconds is the time the pipeline took to make the plans of
	// the row's variant at every level of the sweep together (budgets,
	// rounding, calibration; not the heavy-tail fits, made once before).
	ProfileSeconds float64    `json:"profile_seconds,omitempty"`
	Results        []Result   `json:"results"`
	Speed          *Speed     `json:"speed,omitempty"` // nil when the sweep ran without speed
	Plan           *plan.Plan `json:"-"`
}

// Run executes the sweep. e must be loaded sparse from m; calib are the
// calibration tokens (threshold mode and the greedy search need them, the
// rest of the sweep does not); fits are the heavy-tail fits of m. data may
// be empty for a speed-only sweep. log gets one aligned line per finished
// row and the greedy search's levels, under a progress bar over the rows.
//
// The speed runs take their prompt from the start of the first text (data,
// then calibration) that is long enough, else fixed pseudo-random ids.
func Run(ctx context.Context, e *engine.Model, m *model.Checkpoint, calibTokens []int, data []Data, fits []htsr.Fit, c Config, log io.Writer) ([]Row, error) {
	r, err := newRun(ctx, e, m, calibTokens, data, fits, c, log)
	if err != nil {
		return nil, err
	}
	levels := slices.Clone(c.Levels)
	slices.Sort(levels)
	sparse := slices.Compact(slices.DeleteFunc(slices.Clone(levels), func(l float64) bool { return l == 0 }))
	groups, err := r.build(sparse)
	r.pipe.Search.Bar.Finish()
	if err != nil {
		return nil, err
	}
	r.startRows(levels, groups)
	defer r.bar.Finish()
	var rows []Row
	for _, lv := range levels {
		group := []Row{{Level: 0, Method: "dense", Label: "dense"}}
		if lv != 0 {
			i, _ := slices.BinarySearch(sparse, lv)
			group = slices.Clone(groups[i])
		}
		for i := range group {
			if err := r.measure(&group[i]); err != nil {
				return nil, err
			}
		}
		compareToUniform(group)
		rows = append(rows, group...)
	}
	compareToDense(rows)
	return rows, nil
}

// run is one sweep under way.
type run struct {
	ctx  context.Context
	e    *engine.Model
	c    Config
	data []Data
	log  io.Writer
	bar  *progress.Bar // over the rows (startRows)
	// width is the longest row label, for aligned lines.
	width int
	pipe  *profile.Pipeline
	// s runs the perplexities, the search and the calibration; speed
	// (nil without Config.Speed.On) the speed runs, of prompt.
	s, speed *engine.State
	prompt   []int
}

// newRun checks c and sets up the states and the pipeline.
func newRun(ctx context.Context, e *engine.Model, m *model.Checkpoint, calibTokens []int, data []Data, fits []htsr.Fit, c Config, log io.Writer) (*run, error) {
	if why := c.NeedsCalib(); why != "" && len(calibTokens) == 0 {
		return nil, fmt.Errorf("sweep: %s", why)
	}
	if len(data) == 0 && !c.Speed.On {
		return nil, errors.New("sweep: nothing to measure: no evaluation text and speed off")
	}
	r := &run{ctx: ctx, e: e, c: c, data: data, log: log, s: e.NewState(c.Ctx, 128)}
	var err error
	if r.pipe, err = profile.New(m, fits, r.s, calibTokens); err != nil {
		return nil, err
	}
	r.pipe.CalibPasses, r.pipe.SearchTokens = c.CalibPasses, c.GreedyTokens
	r.pipe.Search, r.pipe.Seeds = c.Greedy, profile.Grid{Eps: c.Eps, Directions: c.Directions}
	if slices.Contains(c.Methods, profile.MethodGreedy) {
		bar := progress.New(log, profile.GreedyBarTotal, "greedy search")
		r.pipe.Search.Bar = bar
		r.pipe.Search.Progress = func(level, loss float64) {
			bar.Println(fmt.Sprintf("greedy: level %.2f reached, calibration NLL %.4f", level, loss))
		}
	}
	if c.Speed.On {
		if err := c.Speed.Check(e.Config.SeqLen); err != nil {
			return nil, err
		}
		r.speed = e.NewState(c.Speed.PrefillTokens+max(c.Speed.DecodeTokens, c.Speed.Warmup), c.Speed.PrefillTokens)
		var texts [][]int
		for _, d := range data {
			texts = append(texts, d.Tokens)
		}
		r.prompt = speedPrompt(c.Speed.PrefillTokens, e.Config.VocabSize, append(texts, calibTokens)...)
	}
	return r, nil
}

// build makes the plans of every method's variants (profile.Variants) at
// each of levels: groups[i] are the rows of levels[i], unmeasured.
func (r *run) build(levels []float64) (groups [][]Row, err error) {
	groups = make([][]Row, len(levels))
	if len(levels) == 0 {
		return groups, nil
	}
	base := alloc.Options{BlockAverage: r.c.BlockAverage, SMin: r.c.SMin, SMax: r.c.SMax}
	grid := profile.Grid{Eps: r.c.Eps, Directions: r.c.Directions}
	sels := r.c.Selections
	if len(sels) == 0 {
		sels = []plan.Selection{plan.SelectMagnitude}
	}
	for _, method := range r.c.Methods {
		for _, sel := range sels {
			variants, err := profile.Variants(profile.Options{Method: method, Mode: r.c.Mode, Selection: sel, Options: base}, grid)
			if err != nil {
				return nil, fmt.Errorf("sweep: %w", err)
			}
			for _, o := range variants {
				start := time.Now()
				plans, err := r.pipe.Make(r.ctx, o, levels)
				if err != nil {
					return nil, err
				}
				took := time.Since(start).Seconds()
				for i, p := range plans {
					groups[i] = append(groups[i], Row{Level: levels[i], Method: string(method), Label: o.Label(), Selection: string(p.Selection),
						Eps: o.Eps, Direction: string(o.Direction), Planned: p.Realized, ProfileSeconds: took, Plan: p})
				}
			}
		}
	}
	return groups, nil
}

// measure runs row's plan (none: dense) over every text, and times it if
// the sweep is timed.
func (r *run) measure(row *Row) error {
	var bud *backend.Budgets // the row's: nil for dense
	if row.Plan != nil {
		var err error
		if bud, err = r.e.Budgets(row.Plan, r.c.Mode); err != nil {
			return err
		}
	}
	r.s.Budgets = bud
	if r.speed != nil {
		r.speed.Budgets = bud
	}
	for _, d := range r.data {
		r.e.Realized() // reset the counters
		res, err := eval.Perplexity(r.ctx, r.s, d.Tokens, eval.Options{Ctx: r.c.Ctx, Stride: r.c.Stride, Sparse: r.c.Sparse})
		if err != nil {
			return fmt.Errorf("%s on %s: %w", row.Label, d.Name, err)
		}
		_, w := r.e.Realized()
		if row.Plan == nil || math.IsNaN(w) {
			w = 0
		}
		row.Results = append(row.Results, Result{Data: d.Name, Perplexity: res.Perplexity, MeanNLL: res.MeanNLL, Realized: w, VsUniform: math.NaN(), Seconds: res.Seconds})
	}
	if r.speed != nil {
		sp, err := measureSpeed(r.ctx, r.speed, r.prompt, r.c.Speed)
		if err != nil {
			return fmt.Errorf("%s: speed: %w", row.Label, err)
		}
		row.Speed = sp
	}
	r.logRow(row)
	return nil
}

// startRows starts the bar over the rows to measure at levels (0: the
// dense row; else the row group built for it) and sets the label width.
func (r *run) startRows(levels []float64, groups [][]Row) {
	r.width = len("dense")
	n := 0
	for _, lv := range levels {
		if lv == 0 {
			n++
		}
	}
	for _, g := range groups {
		for _, row := range g {
			r.width = max(r.width, len(row.Label))
		}
	}
	sparse := slices.Compact(slices.DeleteFunc(slices.Clone(levels), func(l float64) bool { return l == 0 }))
	for _, lv := range levels {
		if i, ok := slices.BinarySearch(sparse, lv); ok && lv != 0 {
			n += len(groups[i])
		}
	}
	r.bar = progress.New(r.log, int64(n), "sweep rows")
}

// logRow writes row's line above the bar, its columns aligned.
func (r *run) logRow(row *Row) {
	line := fmt.Sprintf("level %.2f  %-*s", row.Level, r.width, row.Label)
	for _, x := range row.Results {
		line += fmt.Sprintf("  %s ppl %11.4f", x.Data, x.Perplexity)
	}
	if row.Speed != nil {
		line += fmt.Sprintf("  decode %9.1f tok/s", row.Speed.DecodeTPS)
	}
	r.bar.Println(line)
	r.bar.Add(1)
}

// compareToUniform fills VsUniform for the rows of one level, against
// uniform allocation with magnitude selection (TEAL).
func compareToUniform(group []Row) {
	var uni *Row
	for i := range group {
		if group[i].Method == string(profile.MethodUniform) && (group[i].Selection == "" || group[i].Selection == string(plan.SelectMagnitude)) {
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
