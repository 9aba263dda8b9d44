package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/acttail/acttail-gpu/runtime/backend/cuda"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate", "[--model PATH] --prompt TEXT [flags]", stdout, stderr)
	var mf modelFlags
	mf.register(fs)
	var f generateFlags
	f.register(fs, &mf)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := f.config(); err != nil {
		return err
	}
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	s, ids, err := f.state(l, mf.plan)
	if err != nil {
		return err
	}
	st, err := f.generate(ctx, l, s, ids, stdout)
	if err != nil {
		return err
	}
	f.report(stderr, l, s, st)
	return nil
}

// generateFlags are the flags of `generate` beyond the model flags.
type generateFlags struct {
	prompt, mode          string
	maxTok, ctxLen        int
	o                     sample.Options
	seed                  int64
	noStop, sparsePrefill bool
}

// register adds the flags; --plan sets mf's plan.
func (f *generateFlags) register(fs *flagSet, mf *modelFlags) {
	fs.StringVar(&f.prompt, "prompt", "", "text to complete (empty: start from BOS)")
	fs.IntVar(&f.maxTok, "max-tokens", 256, "most tokens to generate (0: until the context is full)")
	fs.Float64Var(&f.o.Temperature, "temperature", 0, "sampling temperature (0: greedy)")
	fs.IntVar(&f.o.TopK, "top-k", 0, "sample only from the k most likely tokens (0: all)")
	fs.Float64Var(&f.o.TopP, "top-p", 1, "sample from the smallest set with this much probability (1: all)")
	fs.Int64Var(&f.seed, "seed", -1, "random seed (-1: from the clock; printed)")
	fs.IntVar(&f.ctxLen, "ctx", 0, "context length (0: the model's)")
	fs.BoolVar(&f.noStop, "ignore-eos", false, "keep generating after an end-of-sequence token")
	fs.StringVar(&mf.plan, "plan", "", "sparsity plan to apply (written by acttail-gpu profile)")
	fs.StringVar(&f.mode, "mode", "", "with --plan: topk or threshold (default: the plan's)")
	fs.BoolVar(&f.sparsePrefill, "sparse-prefill", false, "with --plan: sparsify the prompt too, not only generated tokens")
}

// config checks the flags and settles the sampling options, drawing a
// seed from the clock where none was given.
func (f *generateFlags) config() error {
	if f.maxTok < 0 {
		return fmt.Errorf("--max-tokens %d: must be ≥ 0", f.maxTok)
	}
	if f.seed < 0 {
		f.seed = time.Now().UnixNano() & (1<<62 - 1)
	}
	f.o.Seed = uint64(f.seed)
	return f.o.Validate()
}

// state encodes the prompt and makes the sequence that generates from it,
// under the plan at planPath if there is one.
func (f *generateFlags) state(l *loaded, planPath string) (*engine.State, []int, error) {
	n, err := l.contextLength(f.ctxLen)
	if err != nil {
		return nil, nil, err
	}
	ids := l.tok.Encode(f.prompt, true)
	if len(ids) == 0 {
		return nil, nil, fmt.Errorf("the prompt encodes to no tokens and the model has no BOS token")
	}
	s := l.engine.NewState(n, 64)
	if planPath != "" {
		if _, s.Budgets, err = loadPlan(l, planPath, f.mode); err != nil {
			return nil, nil, err
		}
	}
	s.SparseFrom = len(ids)
	if f.sparsePrefill {
		s.SparseFrom = 0
	}
	return s, ids, nil
}

// generate prints the prompt and, as they come, the tokens s generates
// after it.
func (f *generateFlags) generate(ctx context.Context, l *loaded, s *engine.State, ids []int, stdout io.Writer) (engine.Stats, error) {
	fmt.Fprint(stdout, f.prompt)
	stream := l.tok.NewStream()
	// Prime the stream with the prompt so the first generated piece keeps
	// the space that joins it to the prompt.
	for _, id := range ids {
		stream.Next(id)
	}
	opt := engine.GenOptions{MaxTokens: f.maxTok, Sample: f.o}
	if !f.noStop {
		opt.IsEnd = l.tok.IsEnd
	}
	st, err := s.Generate(ctx, ids, opt, func(id int) error {
		_, err := io.WriteString(stdout, stream.Next(id))
		return err
	})
	fmt.Fprintln(stdout)
	return st, err
}

// report prints the run's speeds, why it stopped, the seed, and the
// realized sparsity and CUDA graph use where they apply.
func (f *generateFlags) report(stderr io.Writer, l *loaded, s *engine.State, st engine.Stats) {
	fmt.Fprintf(stderr, "prompt: %d tokens, %.1f tok/s; decode: %d tokens, %.1f tok/s; stopped: %s; seed %d; %s",
		st.PromptTokens, st.PromptTPS(), st.GenTokens, st.DecodeTPS(), st.Reason, f.o.Seed, l.engine.Backend.Describe())
	if s.Budgets != nil {
		_, w := l.engine.Realized()
		fmt.Fprintf(stderr, "; realized sparsity %.3f", w)
	}
	if g, ok := l.engine.Backend.(*cuda.Backend); ok {
		gs := g.GraphStats()
		fmt.Fprintf(stderr, "; CUDA graphs: %d of %d steps (%d reused as they were)", gs.Captured, gs.Captured+gs.Eager, gs.Reused)
		if gs.Failed > 0 {
			fmt.Fprintf(stderr, ", %d failed captures (%v)", gs.Failed, gs.LastError)
		}
	}
	fmt.Fprintln(stderr)
}
