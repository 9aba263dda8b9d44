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
	var f evalFlags
	f.register(fs, &mf)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := f.check(fs); err != nil {
		return err
	}
	text, err := os.ReadFile(f.data)
	if err != nil {
		return err
	}
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	ids := l.tok.Encode(string(text), true)
	if f.limit > 0 && len(ids) > f.limit {
		ids = ids[:f.limit]
	}
	r, err := f.score(ctx, l, mf.plan, ids, stderr)
	if err != nil {
		return err
	}
	if f.asJSON {
		return r.writeJSON(stdout)
	}
	return r.write(stdout)
}

// evalFlags are the flags of `eval` beyond the model flags.
type evalFlags struct {
	data, mode string
	limit      int
	asJSON     bool
	o          eval.Options
}

// register adds the flags; --plan sets mf's plan.
func (f *evalFlags) register(fs *flagSet, mf *modelFlags) {
	fs.StringVar(&f.data, "data", "", "text file to score (required)")
	fs.IntVar(&f.o.Ctx, "ctx", 0, "window length in tokens (0: the model's context)")
	fs.IntVar(&f.o.Stride, "stride", 0, "tokens between window starts (0: half the window)")
	fs.IntVar(&f.limit, "max-tokens", 0, "score only the first N tokens of the text (0: all)")
	fs.BoolVar(&f.asJSON, "json", false, "print the summary as JSON")
	fs.StringVar(&mf.plan, "plan", "", "sparsity plan to apply (written by acttail-gpu profile)")
	fs.StringVar(&f.mode, "mode", "", "with --plan: topk or threshold (default: the plan's)")
	fs.StringVar(&f.o.Sparse, "sparse-tokens", eval.SparseSecondHalf, "with --plan: which tokens of each window run sparse: all, second-half (TEAL) or none")
}

// check rejects a missing --data and negative lengths.
func (f *evalFlags) check(fs *flagSet) error {
	if f.data == "" {
		return usageError(fs, "--data is required")
	}
	if f.o.Ctx < 0 || f.o.Stride < 0 || f.limit < 0 {
		return fmt.Errorf("--ctx, --stride and --max-tokens must be ≥ 0")
	}
	return nil
}

// evalReport is the outcome of an evaluation, for printing.
type evalReport struct {
	l        *loaded
	data     string
	tokens   int // of the text, after --max-tokens
	res      eval.Result
	sparse   string // --sparse-tokens
	planPath string
	p        *plan.Plan // nil: dense
	bud      *backend.Budgets
	realized float64
	sites    []siteReport
}

// score measures the perplexity of ids, under the plan at planPath if
// there is one.
func (f *evalFlags) score(ctx context.Context, l *loaded, planPath string, ids []int, stderr io.Writer) (*evalReport, error) {
	o := f.o
	var err error
	if o.Ctx, err = l.contextLength(o.Ctx); err != nil {
		return nil, err
	}
	r := &evalReport{l: l, data: f.data, tokens: len(ids), sparse: o.Sparse, planPath: planPath}
	if planPath != "" {
		if r.p, r.bud, err = loadPlan(l, planPath, f.mode); err != nil {
			return nil, err
		}
	}
	s := l.engine.NewState(o.Ctx, 128)
	s.Budgets = r.bud
	bar := progress.New(stderr, int64(len(ids)-1), "eval")
	o.Progress = func(done, total int) { bar.Set(int64(done)) }
	r.res, err = eval.Perplexity(ctx, s, ids, o)
	bar.Finish()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.data, err)
	}
	if r.p != nil {
		r.realize()
	}
	return r, nil
}

// realize reads the sparsity the engine realized, in all and at each of
// the plan's sites.
func (r *evalReport) realize() {
	per, w := r.l.engine.Realized()
	r.realized = w
	for i, st := range r.p.Sites {
		r.sites = append(r.sites, siteReport{st.Layer, st.Proj, st.Sparsity, 1 - float64(st.K)/float64(st.DIn), per[i]})
	}
}

func (r *evalReport) writeJSON(w io.Writer) error {
	out := struct {
		Model    string       `json:"model"`
		Data     string       `json:"data"`
		Backend  string       `json:"backend"`
		Plan     string       `json:"plan,omitempty"`
		Realized float64      `json:"realized_sparsity,omitempty"`
		Sites    []siteReport `json:"sites,omitempty"`
		eval.Result
	}{r.l.file.Source, r.data, r.l.engine.Backend.Name(), r.planPath, r.realized, r.sites, r.res}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// write prints the summary, and with a plan a table of its sites.
func (r *evalReport) write(w io.Writer) error {
	res := r.res
	fmt.Fprintf(w, "model        %s\ndata         %s (%d tokens)\nperplexity   %.4f\nmean NLL     %.5f\ntokens       %d scored, %d run in %d windows (ctx %d, stride %d)\nspeed        %.1f tokens/s (%.2f s)\n",
		r.l.file.Source, r.data, r.tokens, res.Perplexity, res.MeanNLL, res.TokensScored, res.TokensRun, res.Windows, res.Ctx, res.Stride, res.TokensPerSec, res.Seconds)
	if r.p == nil {
		return nil
	}
	fmt.Fprintf(w, "plan         %s (%s, %s mode, tokens sparse: %s)\nsparsity     planned %.4f, realized %.4f on the sparse tokens\n\n", r.planPath, r.p.Method, r.bud.Mode(), r.sparse, r.p.Realized, r.realized)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\tproj\tplanned\twith k\trealized\t")
	for _, s := range r.sites {
		fmt.Fprintf(tw, "%d\t%s\t%.4f\t%.4f\t%.4f\t\n", s.Layer, s.Proj, s.Planned, s.PlannedK, s.Realized)
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
