// Package calib records the magnitudes of the activations that enter each
// projection while calibration text runs through the model, and turns them
// into per-projection thresholds: t_i is the s_i-quantile of |x| at the
// input of projection i, so zeroing |x| ≤ t_i drops a fraction s_i of the
// inputs on text like the calibration text (TEAL's threshold mode).
//
// Magnitudes go into log-spaced histograms (TEAL uses about 10k bins): 64
// bins per octave from 2^-40 to 2^24, which bounds the quantile's relative
// error by about 1%, with exact zeros counted apart.
package calib

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

const (
	binsPerOctave = 64
	minExp        = -40
	maxExp        = 24
	nbins         = (maxExp - minExp) * binsPerOctave
)

// Hist is a histogram of |x|.
type Hist struct {
	Zeros  int64
	Counts [nbins]int64
	Total  int64
}

func bin(a float32) int {
	e := math.Log2(float64(a))
	b := int(math.Floor((e - minExp) * binsPerOctave))
	return max(0, min(nbins-1, b))
}

// Add counts the magnitudes of xs. NaN entries are counted as above every bin.
func (h *Hist) Add(xs []float32) {
	for _, v := range xs {
		h.add(float32(math.Abs(float64(v))))
	}
}

// AddScaled counts the scores |x_j|·scale[j] of xs, rows of len(scale)
// values, multiplied in float32 as the select does
// (gather.ThresholdScaled).
func (h *Hist) AddScaled(xs, scale []float32) {
	for r := 0; r+len(scale) <= len(xs); r += len(scale) {
		for j, v := range xs[r : r+len(scale)] {
			h.add(float32(math.Abs(float64(v * scale[j]))))
		}
	}
}

func (h *Hist) add(a float32) {
	h.Total++
	if a == 0 {
		h.Zeros++
		return
	}
	h.Counts[bin(a)]++
}

// Quantile returns t such that a fraction q of the recorded magnitudes is
// ≤ t: the upper edge of the bin where the cumulative count reaches q·Total
// (0 when the zeros alone reach it).
func (h *Hist) Quantile(q float64) float32 {
	if h.Total == 0 || q <= 0 {
		return 0
	}
	need := int64(math.Ceil(q * float64(h.Total)))
	c := h.Zeros
	if c >= need {
		return 0
	}
	for b := range h.Counts {
		c += h.Counts[b]
		if c >= need {
			return float32(math.Exp2(minExp + float64(b+1)/binsPerOctave))
		}
	}
	return float32(math.Exp2(maxExp))
}

// Recorder collects one histogram per input site: for each layer the
// attention input (shared by q, k, v), the o input, the MLP input (gate,
// up) and the down input. Under a weight-informed selection it records
// the scores |x_j|·scale_j instead, one histogram per projection whose
// scale it does not share with the first of its group.
type Recorder struct {
	layers int
	hists  [][model.NumProjections]Hist
	scales [][]float32 // per plan site; nil: |x|
	Tokens int
}

// groupOf lists the projections that read the input of p, the first one
// first; the engine hands Observe that first one.
func groupOf(p model.Projection) []model.Projection {
	switch p {
	case model.ProjQ, model.ProjK, model.ProjV:
		return []model.Projection{model.ProjQ, model.ProjK, model.ProjV}
	case model.ProjGate, model.ProjUp:
		return []model.Projection{model.ProjGate, model.ProjUp}
	}
	return []model.Projection{p}
}

// NewRecorder returns an empty recorder for a model with layers blocks,
// recording the scores under scales (engine.Model.Scales; nil: |x|).
func NewRecorder(layers int, scales [][]float32) *Recorder {
	return &Recorder{layers: layers, hists: make([][model.NumProjections]Hist, layers), scales: scales}
}

// key is the projection whose histogram holds the scores of p in layer l:
// the first of p's group unless p has a scale of its own.
func (r *Recorder) key(l int, p model.Projection) model.Projection {
	lead := groupOf(p)[0]
	if r.scales == nil {
		return lead
	}
	a, b := r.scales[plan.Index(l, p)], r.scales[plan.Index(l, lead)]
	if len(a) > 0 && len(b) > 0 && &a[0] == &b[0] {
		return lead
	}
	return p
}

// Observe is an engine.State.Observe hook.
func (r *Recorder) Observe(layer int, p model.Projection, x []float32, rows, width int) {
	x = x[:rows*width]
	for _, q := range groupOf(p) {
		switch {
		case r.key(layer, q) != q:
		case r.scales == nil:
			r.hists[layer][q].Add(x)
		default:
			r.hists[layer][q].AddScaled(x, r.scales[plan.Index(layer, q)])
		}
	}
	if layer == 0 && p == model.ProjQ {
		r.Tokens += rows
	}
}

// Hist returns the histogram of the scores at the input of projection p
// in layer l.
func (r *Recorder) Hist(l int, p model.Projection) *Hist { return &r.hists[l][r.key(l, p)] }

// Thresholds sets Threshold on every site from its Sparsity.
func (r *Recorder) Thresholds(sites []plan.Site) error {
	if len(sites) != r.layers*int(model.NumProjections) {
		return fmt.Errorf("calibration has %d layers, plan has %d sites", r.layers, len(sites))
	}
	for i := range sites {
		p := model.Projection(i % int(model.NumProjections))
		sites[i].Threshold = r.Hist(sites[i].Layer, p).Quantile(sites[i].Sparsity)
	}
	return nil
}

// Run feeds tokens through s in windows of s.Context() tokens and records
// every projection input's scores under scales (nil: |x|). With sparse
// false every token runs dense; with it true every token runs under the
// state's current budgets. The tokens run are added to ctx's progress bar
// (progress.NewContext), if any.
func Run(ctx context.Context, s *engine.State, tokens []int, scales [][]float32, sparse bool) (*Recorder, error) {
	if len(tokens) < 2 {
		return nil, errors.New("calibration text is shorter than two tokens")
	}
	m := s.Model()
	r := NewRecorder(m.Config.NLayers, scales)
	prev, prevFrom := s.Observe, s.SparseFrom
	defer func() { s.Observe, s.SparseFrom = prev, prevFrom }()
	s.Observe = r.Observe
	logits := make([]float32, m.Config.VocabSize)
	for at := 0; at < len(tokens); at += s.Context() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.Reset()
		s.SparseFrom = math.MaxInt
		if sparse {
			s.SparseFrom = 0
		}
		n := min(s.Context(), len(tokens)-at)
		if err := s.Forward(tokens[at:at+n], logits, false); err != nil {
			return nil, err
		}
		progress.FromContext(ctx).Add(int64(n))
	}
	return r, nil
}

// Calibrate sets the Threshold of every site so that, on tokens, the
// threshold plan under selection sel realizes each site's Sparsity: the
// thresholds are quantiles of the scores sel ranks by. The input of a site
// depends on the sparsity of every site before it, so thresholds from the
// dense model overshoot downstream (the o and down inputs most); Calibrate
// therefore iterates: thresholds from the dense run, then passes more
// runs with the current thresholds applied, each recomputing them from the
// inputs the sparse model really produces. Two or three passes settle on
// calibration text. The model must be loaded sparse. The passes run s
// under budgets of their own; s.Budgets is left as it was. It runs the
// tokens passes+1 times (see Run for the progress it reports).
func Calibrate(ctx context.Context, s *engine.State, tokens []int, sites []plan.Site, sel plan.Selection, passes int) (*Recorder, error) {
	m := s.Model()
	scales, err := m.Scales(sel)
	if err != nil {
		return nil, err
	}
	rec, err := Run(ctx, s, tokens, scales, false)
	if err != nil {
		return nil, err
	}
	if err := rec.Thresholds(sites); err != nil {
		return nil, err
	}
	defer func(b *backend.Budgets) { s.Budgets = b }(s.Budgets)
	for range passes {
		if s.Budgets, err = m.SiteBudgets(ThresholdBudgets(sites, scales)); err != nil {
			return nil, err
		}
		if rec, err = Run(ctx, s, tokens, scales, true); err != nil {
			return nil, err
		}
		if err := rec.Thresholds(sites); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// ThresholdBudgets turns plan sites into run-time threshold budgets, under
// scales (engine.Model.Scales; nil: |x|).
func ThresholdBudgets(sites []plan.Site, scales [][]float32) []backend.Budget {
	out := make([]backend.Budget, len(sites))
	for i, s := range sites {
		out[i] = backend.Budget{ID: i, K: s.K, Threshold: s.Threshold}
		if scales != nil {
			out[i].Scale = scales[i]
		}
	}
	return out
}
