package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/acttail/acttail-gpu/bench/sweep"
	"github.com/acttail/acttail-gpu/profile"
	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/profile/htsr"
	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/power"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "--sparsity-sweep [--model PATH] [--data FILE ...] [--calib FILE] [flags]", stdout, stderr)
	var mf modelFlags
	mf.register(fs)
	var pf planFlags
	var bf benchFlags
	bf.register(fs)
	pf.register(fs, plan.SelectMagnitude)
	fs.Lookup("method").Hidden = true
	if err := parse(fs, args); err != nil {
		return err
	}
	if bf.replot {
		return bf.redraw(stdout)
	}
	if !bf.isSweep {
		return usageError(fs, "say what to run: --sparsity-sweep")
	}
	cfg, xmin, err := bf.config(&pf)
	if err != nil {
		return err
	}
	mf.sparse = true
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	return bf.sweep(ctx, l, &pf, cfg, xmin, args, stdout, stderr)
}

// benchFlags are the flags of `bench` beyond the model and plan flags.
type benchFlags struct {
	isSweep, speed, replot             bool
	calibPath, sparseTokens            string
	outDir, plotExt                    string
	data, methods, dirs, selections    []string
	levels, epsList                    []float64
	evalCtx, stride, maxEval           int
	greedyStep                         float64
	greedyRefine, greedyTokens, passes int
	prefillTokens, decodeTokens        int
	speedRepeats                       int
}

func (f *benchFlags) register(fs *flagSet) {
	fs.BoolVar(&f.isSweep, "sparsity-sweep", false, "run the accuracy and speed sweep over sparsity levels and allocation methods")
	fs.StringVar(&f.calibPath, "calib", "", "calibration text (required by --mode threshold and the greedy method)")
	fs.StringArrayVar(&f.data, "data", nil, "evaluation text; repeat for several (none: a speed-only sweep)")
	fs.Float64SliceVar(&f.levels, "levels", []float64{0, 0.5, 0.6, 0.7, 0.8, 0.9}, "sparsity levels (0 is the dense baseline)")
	fs.StringSliceVar(&f.methods, "methods", []string{"uniform", "acttail", "greedy"}, "allocation methods: uniform, acttail, greedy")
	fs.StringSliceVar(&f.selections, "selections", nil, "run-time input rankings to run every method under: magnitude, wina, wina-shared (none: --selection)")
	fs.Float64SliceVar(&f.epsList, "eps-list", []float64{0.1, 0.3, 0.5}, "ActTail ε values")
	fs.StringSliceVar(&f.dirs, "directions", []string{string(alloc.LargerAlphaSparser), string(alloc.SmallerAlphaSparser)}, "ActTail directions to run")
	fs.IntVar(&f.evalCtx, "ctx", 256, "perplexity window length")
	fs.IntVar(&f.stride, "stride", 0, "perplexity stride (0: half the window)")
	fs.StringVar(&f.sparseTokens, "sparse-tokens", eval.SparseSecondHalf, "which tokens of each window run sparse: all, second-half (TEAL) or none")
	fs.IntVar(&f.maxEval, "max-eval-tokens", 20000, "score at most this many tokens of each evaluation text (0: all)")
	fs.Float64Var(&f.greedyStep, "greedy-step", 0.05, "greedy search: sparsity added to one projection per move")
	fs.IntVar(&f.greedyRefine, "greedy-refine", 4, "greedy search: transfer rounds at each level")
	fs.IntVar(&f.greedyTokens, "greedy-tokens", 1024, "greedy search: score candidates on the first N calibration tokens (0: all)")
	fs.IntVar(&f.passes, "calib-passes", 3, "threshold mode: calibration passes")
	fs.BoolVar(&f.speed, "speed", true, "also time every row: prefill and batch-1 decode tokens/s, decode latency, joules per token (--speed=false: accuracy only)")
	fs.IntVar(&f.prefillTokens, "prefill-tokens", 128, "speed: prompt length (the prompt runs dense)")
	fs.IntVar(&f.decodeTokens, "decode-tokens", 128, "speed: greedy decode steps after the prompt, sparse under each row's plan")
	fs.IntVar(&f.speedRepeats, "speed-repeats", 3, "speed: timed runs per row; the median is reported")
	fs.StringVar(&f.outDir, "out-dir", "", "write sweep.csv, sweep.json and plots here")
	fs.BoolVar(&f.replot, "replot", false, "only redraw the plots of --out-dir from its sweep.json")
	fs.StringVar(&f.plotExt, "plot-format", "png", "plot format: png or svg")
}

// redraw is --replot: the plots of --out-dir drawn again from its
// sweep.json.
func (f *benchFlags) redraw(stdout io.Writer) error {
	if f.outDir == "" {
		return fmt.Errorf("--replot needs --out-dir")
	}
	rows, err := sweep.ReadJSON(filepath.Join(f.outDir, "sweep.json"), nil)
	if err != nil {
		return err
	}
	files, err := sweep.Plot(filepath.Join(f.outDir, "sweep"), f.plotExt, rows)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "redrew %s\n", strings.Join(files, ", "))
	return nil
}

// config checks the flags and returns the sweep they ask for, and the
// xmin rule of its fits.
func (f *benchFlags) config(pf *planFlags) (sweep.Config, htsr.XminMethod, error) {
	var cfg sweep.Config
	if len(f.data) == 0 && !f.speed {
		return cfg, "", fmt.Errorf("nothing to measure: give --data, or leave --speed on for a speed-only sweep")
	}
	if f.plotExt != "png" && f.plotExt != "svg" {
		return cfg, "", fmt.Errorf("--plot-format %q: want png or svg", f.plotExt)
	}
	for _, lv := range f.levels {
		if !(lv >= 0 && lv < 1) {
			return cfg, "", fmt.Errorf("--levels: %g is outside [0, 1)", lv)
		}
	}
	var directions []alloc.Direction
	for _, d := range f.dirs {
		if d != string(alloc.LargerAlphaSparser) && d != string(alloc.SmallerAlphaSparser) {
			return cfg, "", fmt.Errorf("--directions: %q: want %s or %s", d, alloc.LargerAlphaSparser, alloc.SmallerAlphaSparser)
		}
		directions = append(directions, alloc.Direction(d))
	}
	var methods []profile.Method
	for _, s := range f.methods {
		m, err := profile.ParseMethod(s)
		if err != nil {
			return cfg, "", fmt.Errorf("--methods: %w", err)
		}
		methods = append(methods, m)
	}
	opts, err := pf.options(0)
	if err != nil {
		return cfg, "", err
	}
	selections := []plan.Selection{opts.Selection}
	if len(f.selections) > 0 {
		selections = nil
		for _, s := range f.selections {
			sel, err := plan.ParseSelection(s)
			if err != nil {
				return cfg, "", fmt.Errorf("--selections: %w", err)
			}
			selections = append(selections, sel)
		}
	}
	cfg = sweep.Config{
		Levels: f.levels, Methods: methods, Eps: f.epsList, Directions: directions, BlockAverage: pf.blockAverage,
		SMin: pf.sMin, SMax: pf.sMax, Mode: opts.Mode, Selections: selections, Ctx: f.evalCtx, Stride: f.stride, Sparse: f.sparseTokens, CalibPasses: f.passes,
		Greedy:       profile.GreedyOptions{Step: f.greedyStep, Refine: f.greedyRefine, SMax: pf.sMax},
		GreedyTokens: f.greedyTokens,
	}
	if why := cfg.NeedsCalib(); why != "" && f.calibPath == "" && pf.calibSample == 0 {
		return cfg, "", fmt.Errorf("%s: give --calib or --calib-sample", why)
	}
	if f.speed {
		cfg.Speed = sweep.SpeedOptions{On: true, PrefillTokens: f.prefillTokens, DecodeTokens: f.decodeTokens, Repeats: f.speedRepeats}
		if err := cfg.Speed.Check(0); err != nil {
			return cfg, "", err
		}
	}
	return cfg, opts.Xmin, nil
}

// sweep runs cfg on the loaded model, prints its table and writes
// --out-dir.
func (f *benchFlags) sweep(ctx context.Context, l *loaded, pf *planFlags, cfg sweep.Config, xmin htsr.XminMethod, args []string, stdout, stderr io.Writer) error {
	var calibIDs []int
	var err error
	if f.calibPath != "" || pf.calibSample > 0 {
		if calibIDs, err = pf.tokens(ctx, l, f.calibPath); err != nil {
			return err
		}
	}
	sets, err := f.texts(l)
	if err != nil {
		return err
	}
	fits, err := profile.FitsFor(ctx, l.file, cfg.Methods, xmin, pf.fitsCache, stderr)
	if err != nil {
		return err
	}
	var energy, noMeter string // the meter, or why there is none
	if f.speed {
		cfg.Speed.Meter, noMeter = power.Auto(l.engine.Backend.Name() == "cuda")
		energy = noMeter
		if cfg.Speed.Meter != nil {
			energy = cfg.Speed.Meter.Name()
		}
	}
	start := time.Now()
	rows, err := sweep.Run(ctx, l.engine, l.file, calibIDs, sets, fits, cfg, stderr)
	if err != nil {
		return err
	}
	if err := sweep.Table(stdout, rows); err != nil {
		return err
	}
	if f.speed {
		fmt.Fprintf(stdout, "\nspeed on %s, dense prompt of %d tokens then %d sparse decode tokens, median of %d runs; energy: %s\n",
			l.engine.Backend.Describe(), f.prefillTokens, f.decodeTokens, f.speedRepeats, energy)
	}
	if f.outDir == "" {
		return nil
	}
	meta := map[string]any{
		"command": "acttail-gpu bench " + strings.Join(args, " "), "model": l.file.Source, "model_id": plan.Identify(l.file),
		"calib": f.calibPath, "calib_tokens": len(calibIDs), "backend": l.engine.Backend.Describe(), "seconds": time.Since(start).Seconds(),
		"config": cfg, "date": time.Now().UTC().Format(time.RFC3339),
	}
	switch {
	case cfg.Speed.Meter != nil:
		meta["energy_meter"] = energy
	case f.speed:
		meta["no_energy"] = noMeter
	}
	return f.write(meta, rows, stderr)
}

// texts reads and encodes the evaluation texts.
func (f *benchFlags) texts(l *loaded) ([]sweep.Data, error) {
	var sets []sweep.Data
	for _, d := range f.data {
		raw, err := os.ReadFile(d)
		if err != nil {
			return nil, err
		}
		ids := l.tok.Encode(string(raw), true)
		if f.maxEval > 0 && len(ids) > f.maxEval {
			ids = ids[:f.maxEval]
		}
		sets = append(sets, sweep.Data{Name: filepath.Base(d), Tokens: ids})
	}
	return sets, nil
}

// write writes sweep.csv, sweep.json and the plots into --out-dir.
func (f *benchFlags) write(meta map[string]any, rows []sweep.Row, stderr io.Writer) error {
	if err := os.MkdirAll(f.outDir, 0o755); err != nil {
		return err
	}
	if err := sweep.WriteCSV(filepath.Join(f.outDir, "sweep.csv"), rows); err != nil {
		return err
	}
	if err := sweep.WriteJSON(filepath.Join(f.outDir, "sweep.json"), meta, rows); err != nil {
		return err
	}
	files, err := sweep.Plot(filepath.Join(f.outDir, "sweep"), f.plotExt, rows)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s/sweep.csv, sweep.json and %s\n", f.outDir, strings.Join(files, ", "))
	return nil
}
