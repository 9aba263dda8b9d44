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
	d, err := s.Continue(ctx, smp.Next(logits), smp, o, emit) // the prompt's logits are on the host already
	d.PromptTokens, d.PromptSeconds = st.PromptTokens, st.PromptSeconds
	return d, err
}

// Continue is Generate after the prompt: it delivers first, the token smp
// (made from o.Sample) chose from the logits of the last Forward, then runs
// each token it delivers and samples the next, until o or ctx stops it. The
// Stats hold the decode counts, time and reason.
func (s *State) Continue(ctx context.Context, first int, smp *sample.Sampler, o GenOptions, emit func(id int) error) (st Stats, err error) {
	st.Reason = "length"
	t1 := time.Now()
	defer func() { st.DecodeSeconds = time.Since(t1).Seconds() }()
	// take delivers tok unless generation stops at it (cancel, an end
	// token, emit's error).
	take := func(tok int) (stop bool, err error) {
		if ctx.Err() != nil {
			st.Reason = "cancel"
			return true, ctx.Err()
		}
		if o.IsEnd != nil && o.IsEnd(tok) {
			st.Reason = "stop"
			return true, nil
		}
		st.GenTokens++
		return false, emit(tok)
	}
	// more reports whether the token ahead places after the last one
	// delivered is wanted (MaxTokens) and the step that makes it fits the
	// context.
	more := func(ahead int) bool {
		return (o.MaxTokens == 0 || st.GenTokens+ahead <= o.MaxTokens) && s.Pos < s.ctx
	}
	if ch, ok := s.m.Backend.(backend.Chainer); ok && o.Sample.Plain() {
		return st, s.generateChained(ch, smp, o.Sample.Temperature, first, take, more)
	}
	logits := make([]float32, s.Vocab())
	for next := first; ; next = smp.Next(logits) {
		if stop, err := take(next); stop || err != nil {
			return st, err
		}
		if !more(1) {
			return st, nil
		}
		if err := s.Forward([]int{next}, logits, false); err != nil {
			return st, err
		}
	}
}

// generateChained is Generate's decode loop on a backend that picks tokens
// on the device and feeds them to the next step there (backend.Chainer),
// when the options need no truncation. The step for token k+2 is queued
// before token k+1 is read, so the device does not wait for the host
// between steps; the host delivers each token one step behind. When
// generation stops at a token after all (an end token, a cancel, emit's
// error), the step queued for the token after it is dropped: Pos goes
// back, and the cache entry it wrote is overwritten by the next token
// there. The variates are those Sampler.Next would use, so a seed gives
// the host's text (up to a draw within rounding of a boundary between two
// tokens).
func (s *State) generateChained(ch backend.Chainer, smp *sample.Sampler, temperature float64, first int,
	take func(int) (bool, error), more func(ahead int) bool) error {
	temp := float32(temperature)
	pick := func() backend.Ticket {
		u := float32(0)
		if temp > 0 {
			u = float32(smp.Uniform())
		}
		return ch.PickNext(s.sc.logits, s.Vocab(), temp, u)
	}
	if stop, err := take(first); stop || err != nil || !more(1) {
		return err
	}
	if err := s.Decode(first); err != nil {
		return err
	}
	pending := pick()
	for {
		// If the token after the pending one may be wanted, queue its step
		// (on the pending token, on the device) before reading it.
		spec := more(2)
		var ahead backend.Ticket
		if spec {
			if err := s.DecodePicked(); err != nil {
				ch.Picked(pending)
				return err
			}
			ahead = pick()
		}
		tok := ch.Picked(pending)
		if err := s.m.deviceErr(); err != nil {
			if spec {
				ch.Picked(ahead)
			}
			return err
		}
		stop, err := take(tok)
		if stop || err != nil || !spec {
			if spec { // generation ends at the pending token: drop the step queued after it
				ch.Picked(ahead)
				s.Pos--
			}
			return err
		}
		pending = ahead
	}
}
