// Package sample picks the next token from a row of logits: greedy, or
// temperature with optional top-k and top-p (nucleus) truncation, from a
// seeded generator so that a run can be repeated.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Options are the sampling parameters, named as OpenAI's API names them.
type Options struct {
	Temperature float64 // 0: greedy
	TopK        int     // 0: no limit
	TopP        float64 // 0 or 1: no limit
	Seed        uint64
}

// Validate reports impossible settings.
func (o Options) Validate() error {
	switch {
	case o.Temperature < 0 || math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0):
		return fmt.Errorf("temperature %g must be a finite number ≥ 0", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("top-k %d must be ≥ 0", o.TopK)
	case o.TopP < 0 || o.TopP > 1 || math.IsNaN(o.TopP):
		return fmt.Errorf("top-p %g must be in [0, 1]", o.TopP)
	}
	return nil
}

// Plain reports options without truncation (no top-k, no top-p): greedy
// or plain temperature sampling, which a backend.Picker draws on the
// device with the same uniform variates (Sampler.Uniform).
func (o Options) Plain() bool { return o.TopK == 0 && (o.TopP == 0 || o.TopP == 1) }

// Sampler draws tokens. It is not safe for concurrent use.
type Sampler struct {
	opt  Options
	rng  *rand.Rand
	idx  []int
	prob []float64
}

// New returns a sampler; it panics on options Validate rejects.
func New(o Options) *Sampler {
	if err := o.Validate(); err != nil {
		panic(err)
	}
	return &Sampler{opt: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))}
}

// Greedy returns the index of the largest logit (the first on ties).
func Greedy(logits []float32) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return best
}

// Uniform is the next uniform variate in [0, 1) of the sampler's stream:
// the one Next would use for its next draw, for a draw made elsewhere (on
// the device). Greedy draws use none.
func (s *Sampler) Uniform() float64 { return s.rng.Float64() }

// Next picks a token from logits (which it does not modify).
func (s *Sampler) Next(logits []float32) int {
	if s.opt.Temperature == 0 {
		return Greedy(logits)
	}
	n := len(logits)
	if cap(s.idx) < n {
		s.idx, s.prob = make([]int, n), make([]float64, n)
	}
	idx, prob := s.idx[:n], s.prob[:n]
	for i := range idx {
		idx[i] = i
	}
	// Sort candidates by logit only as far as truncation needs it.
	keep := n
	if s.opt.TopK > 0 && s.opt.TopK < n {
		keep = s.opt.TopK
	}
	truncate := keep < n || (s.opt.TopP > 0 && s.opt.TopP < 1)
	if truncate {
		sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	}
	idx = idx[:keep]
	maxv := math.Inf(-1)
	for _, i := range idx {
		maxv = max(maxv, float64(logits[i]))
	}
	var sum float64
	for j, i := range idx {
		p := math.Exp((float64(logits[i]) - maxv) / s.opt.Temperature)
		prob[j] = p
		sum += p
	}
	prob = prob[:len(idx)]
	if p := s.opt.TopP; p > 0 && p < 1 {
		var cum float64
		for j := range prob {
			cum += prob[j] / sum
			if cum >= p {
				prob = prob[:j+1]
				break
			}
		}
		sum = 0
		for _, q := range prob {
			sum += q
		}
	}
	r := s.Uniform() * sum
	for j, q := range prob {
		r -= q
		if r < 0 {
			return idx[j]
		}
	}
	return idx[len(prob)-1]
}
