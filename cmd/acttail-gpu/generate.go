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
	prompt := fs.String("prompt", "", "text to complete (empty: start from BOS)")
	maxTok := fs.Int("max-tokens", 256, "most tokens to generate (0: until the context is full)")
	var o sample.Options
	fs.Float64Var(&o.Temperature, "temperature", 0, "sampling temperature (0: greedy)")
	fs.IntVar(&o.TopK, "top-k", 0, "sample only from the k most likely tokens (0: all)")
	fs.Float64Var(&o.TopP, "top-p", 1, "sample from the smallest set with this much probability (1: all)")
	seed := fs.Int64("seed", -1, "random seed (-1: from the clock; printed)")
	ctxLen := fs.Int("ctx", 0, "context length (0: the model's)")
	noStop := fs.Bool("ignore-eos", false, "keep generating after an end-of-sequence token")
	fs.StringVar(&mf.plan, "plan", "", "sparsity plan to apply (written by acttail-gpu profile)")
	mode := fs.String("mode", "", "with --plan: topk or threshold (default: the plan's)")
	sparsePrefill := fs.Bool("sparse-prefill", false, "with --plan: sparsify the prompt too, not only generated tokens")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *maxTok < 0 {
		return fmt.Errorf("--max-tokens %d: must be ≥ 0", *maxTok)
	}
	if *seed < 0 {
		*seed = time.Now().UnixNano() & (1<<62 - 1)
	}
	o.Seed = uint64(*seed)
	if err := o.Validate(); err != nil {
		return err
	}
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	n, err := l.contextLength(*ctxLen)
	if err != nil {
		return err
	}
	ids := l.tok.Encode(*prompt, true)
	if len(ids) == 0 {
		return fmt.Errorf("the prompt encodes to no tokens and the model has no BOS token")
	}
	s := l.engine.NewState(n, 64)
	if mf.plan != "" {
		if _, s.Budgets, err = loadPlan(l, mf.plan, *mode); err != nil {
			return err
		}
	}
	s.SparseFrom = len(ids)
	if *sparsePrefill {
		s.SparseFrom = 0
	}
	fmt.Fprint(stdout, *prompt)
	stream := l.tok.NewStream()
	// Prime the stream with the prompt so the first generated piece keeps
	// the space that joins it to the prompt.
	for _, id := range ids {
		stream.Next(id)
	}
	opt := engine.GenOptions{MaxTokens: *maxTok, Sample: o}
	if !*noStop {
		opt.IsEnd = l.tok.IsEnd
	}
	st, err := s.Generate(ctx, ids, opt, func(id int) error {
		_, err := io.WriteString(stdout, stream.Next(id))
		return err
	})
	fmt.Fprintln(stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "prompt: %d tokens, %.1f tok/s; decode: %d tokens, %.1f tok/s; stopped: %s; seed %d; %s",
		st.PromptTokens, st.PromptTPS(), st.GenTokens, st.DecodeTPS(), st.Reason, o.Seed, l.engine.Backend.Describe())
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
	return nil
}
