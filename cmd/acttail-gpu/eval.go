package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"io"
	"os"
	"text/tabwriter"

	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "[--model PATH] --data FILE [flags]", stdout, stderr)
	var mf modelFlags
	mf.register(fs)
	data := fs.String("data", "", "text file to score (required)")
	var o eval.Options
	fs.IntVar(&o.Ctx, "ctx", 0, "window length in tokens (0: the model's context)")
	fs.IntVar(&o.Stride, "stride", 0, "tokens between window starts (0: half the window)")
	limit := fs.Int("max-tokens", 0, "score only the first N tokens of the text (0: all)")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	fs.StringVar(&mf.plan, "plan", "", "sparsity plan to apply (written by acttail-gpu profile)")
	mode := fs.String("mode", "", "with --plan: topk or threshold (default: the plan's)")
	fs.StringVar(&o.Sparse, "sparse-tokens", eval.SparseSecondHalf, "with --plan: which tokens of each window run sparse: all, second-half (TEAL) or none")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return usageError(fs, "--data is required")
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
	if o.Ctx, err = l.contextLength(o.Ctx); err != nil {
		return err
	}
	var p *plan.Plan
	var bud *backend.Budgets
	if mf.plan != "" {
		if p, bud, err = loadPlan(l, mf.plan, *mode); err != nil {
			return err
		}
	}
	s := l.engine.NewState(o.Ctx, 128)
	s.Budgets = bud
	bar := progress.New(stderr, int64(len(ids)-1), "eval")
	o.Progress = func(done, total int) { bar.Set(int64(done)) }
	res, err := eval.Perplexity(ctx, s, ids, o)
	bar.Finish()
	if err != nil {
		return fmt.Errorf("%s: %w", *data, err)
	}
	var sites []siteReport
	var realized float64
	if p != nil {
		per, w := l.engine.Realized()
		realized = w
		for i, st := range p.Sites {
			sites = append(sites, siteReport{st.Layer, st.Proj, st.Sparsity, 1 - float64(st.K)/float64(st.DIn), per[i]})
		}
	}
	if *asJSON {
		out := struct {
			Model    string       `json:"model"`
			Data     string       `json:"data"`
			Backend  string       `json:"backend"`
			Plan     string       `json:"plan,omitempty"`
			Realized float64      `json:"realized_sparsity,omitempty"`
			Sites    []siteReport `json:"sites,omitempty"`
			eval.Result
		}{l.file.Source, *data, l.engine.Backend.Name(), mf.plan, realized, sites, res}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "model        %s\ndata         %s (%d tokens)\nperplexity   %.4f\nmean NLL     %.5f\ntokens       %d scored, %d run in %d windows (ctx %d, stride %d)\nspeed        %.1f tokens/s (%.2f s)\n",
		l.file.Source, *data, len(ids), res.Perplexity, res.MeanNLL, res.TokensScored, res.TokensRun, res.Windows, res.Ctx, res.Stride, res.TokensPerSec, res.Seconds)
	if p == nil {
		return nil
	}
	fmt.Fprintf(stdout, "plan         %s (%s, %s mode, tokens sparse: %s)\nsparsity     planned %.4f, realized %.4f on the sparse tokens\n\n", mf.plan, p.Method, bud.Mode(), o.Sparse, p.Realized, realized)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\tproj\tplanned\twith k\trealized\t")
	for _, r := range sites {
		fmt.Fprintf(tw, "%d\t%s\t%.4f\t%.4f\t%.4f\t\n", r.Layer, r.Proj, r.Planned, r.PlannedK, r.Realized)
	}
	return tw.Flush()
}

// siteReport is one projection's planned and realized sparsity.
type siteReport struct {
	Layer    int     `json:"layer"`
	Proj     string  `json:"proj"`
	Planned  float64 `json:"planned"`
	PlannedK float64 `json:"planned_k"` // 1 − k/d_in
	Realized float64 `json:"realized"`
}
