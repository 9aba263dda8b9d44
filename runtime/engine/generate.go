package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

// GenOptions control Generate.
type GenOptions struct {
	MaxTokens int // 0: until the end of the context
	Sample    sample.Options
	// IsEnd reports tokens that stop generation (EOS); nil: never stop early.
	IsEnd func(id int) bool
}

// Stats are the counts and timings of one generation.
type Stats struct {
	PromptTokens  int
	GenTokens     int
	PromptSeconds float64
	DecodeSeconds float64
	// Reason is why generation stopped: "stop" (an end token), "length"
	// (max tokens or context), or "cancel".
	Reason string
}

// PromptTPS is prompt tokens per second.
func (s Stats) PromptTPS() float64 { return rate(s.PromptTokens, s.PromptSeconds) }

// DecodeTPS is generated tokens per second (the first token, which comes
// from the prompt pass, is not counted as decode work).
func (s Stats) DecodeTPS() float64 { return rate(s.GenTokens-1, s.DecodeSeconds) }

func rate(n int, sec float64) float64 {
	if sec <= 0 || n <= 0 {
		return 0
	}
	return float64(n) / sec
}

// Generate runs prompt from the current position, then samples up to
// MaxTokens tokens, calling emit with each as soon as it is chosen. An
// error from emit stops generation and is returned.
func (s *State) Generate(ctx context.Context, prompt []int, o GenOptions, emit func(id int) error) (st Stats, err error) {
	st = Stats{PromptTokens: len(prompt), Reason: "length"}
	if len(prompt) == 0 {
		return st, errors.New("generate: empty prompt")
	}
	if err := o.Sample.Validate(); err != nil {
		return st, fmt.Errorf("generate: %w", err)
	}
	if s.Pos+len(prompt) > s.ctx {
		return st, fmt.Errorf("generate: prompt of %d tokens does not fit the context of %d: %w", len(prompt), s.ctx-s.Pos, ErrContextFull)
	}
	logits := make([]float32, s.Vocab())
	t0 := time.Now()
	if err := s.Forward(prompt, logits, false); err != nil {
		return st, err
	}
	st.PromptSeconds = time.Since(t0).Seconds()
	smp := sample.New(o.Sample)
	// step runs the chosen token and picks the next: on the device when the
	// backend can and the options need no truncation (one id read back a
	// token instead of the logits), else on the host. Both draw the same
	// uniform variates, so a seed gives the same text either way (up to a
	// draw that lands within rounding of a boundary between two tokens).
	step := func(tok int) (int, error) {
		err := s.Forward([]int{tok}, logits, false)
		return smp.Next(logits), err
	}
	if p, ok := s.m.Backend.(backend.Picker); ok && o.Sample.Plain() {
		temps, us := []float32{float32(o.Sample.Temperature)}, []float32{0}
		step = func(tok int) (int, error) {
			if err := s.Decode(tok); err != nil {
				return 0, err
			}
			if temps[0] > 0 {
				us[0] = float32(smp.Uniform())
			}
			return p.Pick(s.logits, 1, s.Vocab(), temps, us)[0], nil
		}
	}
	t1 := time.Now()
	defer func() { st.DecodeSeconds = time.Since(t1).Seconds() }()
	next := smp.Next(logits) // the prompt's logits are on the host already
	for {
		if ctx.Err() != nil {
			st.Reason = "cancel"
			return st, ctx.Err()
		}
		if o.IsEnd != nil && o.IsEnd(next) {
			st.Reason = "stop"
			return st, nil
		}
		st.GenTokens++
		if err := emit(next); err != nil {
			return st, err
		}
		if (o.MaxTokens > 0 && st.GenTokens >= o.MaxTokens) || s.Pos >= s.ctx {
			return st, nil
		}
		var err error
		if next, err = step(next); err != nil {
			return st, err
		}
	}
}
