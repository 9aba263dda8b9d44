package sweep

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/power"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

// SpeedOptions switch on and size the speed side of a sweep: every row is
// also timed on the sweep's engine with its plan applied.
type SpeedOptions struct {
	On            bool
	PrefillTokens int // prompt length; the prompt runs dense (SparseFrom = its length)
	DecodeTokens  int // batch-1 decode steps after the prompt, all sparse under the row's plan
	Repeats       int // timed prefill+decode runs; the median rate is reported
	Warmup        int // untimed decode steps, after an untimed prefill, before the timed runs (0: min(8, DecodeTokens))
	// Meter, if not nil, measures the energy of the decode loops (never
	// the prompt or the warm-up); nil leaves Speed.JoulesPerToken NaN.
	// A sampled meter is rough on short loops: size DecodeTokens so that
	// one loop lasts a second or more.
	Meter power.Meter `json:"-"`
}

// Speed is one row's timing. Rates are tokens per second; latencies are
// per decode step in milliseconds, percentiles over the steps of all
// repeats.
type Speed struct {
	PrefillTPS     float64 `json:"prefill_tokens_per_s"` // median over repeats
	DecodeTPS      float64 `json:"decode_tokens_per_s"`  // median over repeats
	SpeedUp        float64 `json:"speedup_vs_dense"`     // DecodeTPS / the dense row's; NaN without a dense row
	P50            float64 `json:"decode_p50_ms"`
	P99            float64 `json:"decode_p99_ms"`
	JoulesPerToken float64 `json:"joules_per_token"` // decode energy / decode tokens, all repeats; NaN without a meter
	// EnergyNote qualifies JoulesPerToken: the meter's note, or why a
	// meter that was there failed.
	EnergyNote string  `json:"energy_note,omitempty"`
	Realized   float64 `json:"decode_realized_sparsity"` // parameter-weighted, over the decode tokens
}

// Check checks the sizes, and that a prompt and its decode fit a context
// of n positions (n 0: skip that check).
func (o SpeedOptions) Check(n int) error {
	if o.PrefillTokens < 1 || o.DecodeTokens < 1 || o.Repeats < 1 || o.Warmup < 0 {
		return fmt.Errorf("speed: %d prefill tokens, %d decode tokens, %d repeats, %d warm-up steps: want ≥ 1 (warm-up ≥ 0)",
			o.PrefillTokens, o.DecodeTokens, o.Repeats, o.Warmup)
	}
	if n > 0 && o.PrefillTokens+max(o.DecodeTokens, o.Warmup) > n {
		return fmt.Errorf("speed: %d prompt + %d decode tokens do not fit the model's context of %d", o.PrefillTokens, o.DecodeTokens, n)
	}
	return nil
}

// speedPrompt returns the prompt for the speed runs: the start of the
// first text that is long enough (a real prompt keeps threshold-mode
// sparsity realistic), else fixed pseudo-random ids.
func speedPrompt(n, vocab int, texts ...[]int) []int {
	for _, t := range texts {
		if len(t) >= n {
			return t[:n]
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]int, n)
	for i := range p {
		p[i] = r.IntN(vocab)
	}
	return p
}

// measureSpeed times prefill and greedy batch-1 decode of prompt on s
// under the plan in force on its model.
func measureSpeed(ctx context.Context, s *engine.State, prompt []int, o SpeedOptions) (*Speed, error) {
	r := &speedRun{ctx: ctx, s: s, prompt: prompt, o: o, logits: make([]float32, s.Vocab())}
	warm := o.Warmup
	if warm == 0 {
		warm = min(8, o.DecodeTokens)
	}
	if _, err := r.prefill(); err != nil {
		return nil, err
	}
	if err := r.decode(warm, nil); err != nil {
		return nil, err
	}
	e := s.Model()
	e.Realized() // reset the counters
	for range o.Repeats {
		if err := r.repeat(); err != nil {
			return nil, err
		}
	}
	sp := &Speed{SpeedUp: math.NaN(), JoulesPerToken: math.NaN(), EnergyNote: r.note}
	_, sp.Realized = e.Realized()
	if s.Budgets == nil || math.IsNaN(sp.Realized) {
		sp.Realized = 0
	}
	sp.PrefillTPS, sp.DecodeTPS = median(r.prefillTPS), median(r.decodeTPS)
	slices.Sort(r.lat)
	sp.P50, sp.P99 = 1000*percentile(r.lat, 0.50), 1000*percentile(r.lat, 0.99)
	switch {
	case r.meterErr != nil:
		sp.EnergyNote = fmt.Sprintf("energy meter failed: %v", r.meterErr)
	case o.Meter != nil:
		sp.JoulesPerToken = r.joules / float64(o.Repeats*o.DecodeTokens)
	}
	return sp, nil
}

// speedRun is the timing of one row under way: the state, under the
// row's budgets, and what the timed runs have measured so far.
type speedRun struct {
	ctx    context.Context
	s      *engine.State
	prompt []int
	o      SpeedOptions
	logits []float32 // the prompt's, for the first decode step
	// per timed run: prefill and decode rates; per decode step: latency
	prefillTPS, decodeTPS, lat []float64
	joules                     float64 // decode energy, all timed runs
	note                       string  // the meter's last note
	meterErr                   error   // a meter that fails stays off for the row
}

// repeat is one timed run: the prompt, then DecodeTokens decode steps,
// measured by the meter if there is one.
func (r *speedRun) repeat() error {
	sec, err := r.prefill()
	if err != nil {
		return err
	}
	r.prefillTPS = append(r.prefillTPS, float64(len(r.prompt))/sec)
	steps := make([]float64, r.o.DecodeTokens)
	on := r.o.Meter != nil && r.meterErr == nil
	if on {
		r.meterErr = r.o.Meter.Start()
		on = r.meterErr == nil
	}
	t := time.Now()
	err = r.decode(r.o.DecodeTokens, steps)
	total := time.Since(t).Seconds()
	if on {
		var m power.Reading
		if m, r.meterErr = r.o.Meter.Stop(); r.meterErr == nil {
			r.joules += m.Joules
			if m.Note != "" {
				r.note = m.Note
			}
		}
	}
	if err != nil {
		return err
	}
	r.decodeTPS = append(r.decodeTPS, float64(r.o.DecodeTokens)/total)
	r.lat = append(r.lat, steps...)
	return nil
}

// prefill runs the prompt, dense, from an empty cache and returns its
// seconds.
func (r *speedRun) prefill() (float64, error) {
	r.s.Reset()
	r.s.SparseFrom = len(r.prompt)
	t := time.Now()
	err := r.s.Forward(r.prompt, r.logits, false)
	return time.Since(t).Seconds(), err
}

// decode runs n greedy steps after the prompt's logits as generate runs
// them (chained on a backend that can), timing the interval before each
// new token into lat (if not nil): what a streaming client sees.
func (r *speedRun) decode(n int, lat []float64) error {
	t, i := time.Now(), 0
	_, err := r.s.Continue(r.ctx, sample.Greedy(r.logits), sample.New(sample.Options{}), engine.GenOptions{MaxTokens: n + 1},
		func(int) error { // the first call delivers the prompt's token, which no step made
			now := time.Now()
			if i > 0 && lat != nil {
				lat[i-1] = now.Sub(t).Seconds()
			}
			t, i = now, i+1
			return nil
		})
	return err
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile is the nearest-rank q-quantile of sorted v.
func percentile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// compareToDense fills SpeedUp against the dense row, if there is one.
func compareToDense(rows []Row) {
	var dense *Speed
	for _, r := range rows {
		if r.Method == "dense" && r.Speed != nil {
			dense = r.Speed
		}
	}
	if dense == nil {
		return
	}
	for _, r := range rows {
		if r.Speed != nil {
			r.Speed.SpeedUp = r.Speed.DecodeTPS / dense.DecodeTPS
		}
	}
}
