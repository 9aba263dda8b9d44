package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "[--model PATH] --data FILE [flags]", stderr)
	var mf modelFlags
	mf.register(fs)
	data := fs.String("data", "", "text file to score (required)")
	var o eval.Options
	fs.IntVar(&o.Ctx, "ctx", 0, "window length in tokens (0: the model's context)")
	fs.IntVar(&o.Stride, "stride", 0, "tokens between window starts (0: half the window)")
	limit := fs.Int("max-tokens", 0, "score only the first N tokens of the text (0: all)")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		fs.Usage()
		return errUsage
	}
	if o.Ctx < 0 || o.Stride < 0 || *limit < 0 {
		return fmt.Errorf("--ctx, --stride and --max-tokens must be ≥ 0")
	}
	text, err := os.ReadFile(*data)
	if err != nil {
		return err
	}
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	ids := l.tok.Encode(string(text), true)
	if *limit > 0 && len(ids) > *limit {
		ids = ids[:*limit]
	}
	if o.Ctx == 0 || o.Ctx > l.engine.Config.SeqLen {
		o.Ctx = l.engine.Config.SeqLen
	}
	s := l.engine.NewState(o.Ctx, 128)
	bar := progress.New(stderr, int64(len(ids)-1), "eval")
	o.Progress = func(done, total int) { bar.Set(int64(done)) }
	res, err := eval.Perplexity(ctx, s, ids, o)
	bar.Finish()
	if err != nil {
		return fmt.Errorf("%s: %w", *data, err)
	}
	if *asJSON {
		out := struct {
			Model   string `json:"model"`
			Data    string `json:"data"`
			Backend string `json:"backend"`
			eval.Result
		}{l.file.Source, *data, l.engine.Backend.Name(), res}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "model        %s\ndata         %s (%d tokens)\nperplexity   %.4f\nmean NLL     %.5f\ntokens       %d scored, %d run in %d windows (ctx %d, stride %d)\nspeed        %.1f tokens/s (%.2f s)\n",
		l.file.Source, *data, len(ids), res.Perplexity, res.MeanNLL, res.TokensScored, res.TokensRun, res.Windows, res.Ctx, res.Stride, res.TokensPerSec, res.Seconds)
	return nil
}
