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
	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "--sparsity-sweep [--model PATH] --calib FILE --data FILE [--data FILE ...] [flags]", stderr)
	var mf modelFlags
	mf.register(fs)
	var pf planFlags
	pf.register(fs)
	fs.Lookup("method").Hidden = true
	isSweep := fs.Bool("sparsity-sweep", false, "run the accuracy sweep over sparsity levels and allocation methods")
	calibPath := fs.String("calib", "", "calibration text (required)")
	data := fs.StringArray("data", nil, "evaluation text; repeat for several (required)")
	levels := fs.Float64Slice("levels", []float64{0, 0.5, 0.6, 0.7, 0.8, 0.9}, "sparsity levels (0 is the dense baseline)")
	methods := fs.StringSlice("methods", []string{"uniform", "acttail", "greedy"}, "allocation methods: uniform, acttail, greedy")
	epsList := fs.Float64Slice("eps-list", []float64{0.1, 0.3, 0.5}, "ActTail ε values")
	dirs := fs.StringSlice("directions", []string{string(alloc.LargerAlphaSparser), string(alloc.SmallerAlphaSparser)}, "ActTail directions to run")
	evalCtx := fs.Int("ctx", 256, "perplexity window length")
	stride := fs.Int("stride", 0, "perplexity stride (0: half the window)")
	sparseTokens := fs.String("sparse-tokens", eval.SparseSecondHalf, "which tokens of each window run sparse: all, second-half (TEAL) or none")
	maxEval := fs.Int("max-eval-tokens", 20000, "score at most this many tokens of each evaluation text (0: all)")
	greedyStep := fs.Float64("greedy-step", 0.05, "greedy search: sparsity added to one projection per move")
	greedyRefine := fs.Int("greedy-refine", 4, "greedy search: transfer rounds at each level")
	passes := fs.Int("calib-passes", 3, "threshold mode: calibration passes")
	outDir := fs.String("out-dir", "", "write sweep.csv, sweep.json and plots here")
	plotExt := fs.String("plot-format", "png", "plot format: png or svg")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !*isSweep {
		fmt.Fprintln(stderr, "bench: say what to run: --sparsity-sweep")
		fs.Usage()
		return errUsage
	}
	if *calibPath == "" || len(*data) == 0 {
		fs.Usage()
		return errUsage
	}
	if *plotExt != "png" && *plotExt != "svg" {
		return fmt.Errorf("--plot-format %q: want png or svg", *plotExt)
	}
	for _, lv := range *levels {
		if !(lv >= 0 && lv < 1) {
			return fmt.Errorf("--levels: %g is outside [0, 1)", lv)
		}
	}
	var directions []alloc.Direction
	for _, d := range *dirs {
		if d != string(alloc.LargerAlphaSparser) && d != string(alloc.SmallerAlphaSparser) {
			return fmt.Errorf("--directions: %q: want %s or %s", d, alloc.LargerAlphaSparser, alloc.SmallerAlphaSparser)
		}
		directions = append(directions, alloc.Direction(d))
	}
	for _, m := range *methods {
		if m != profile.MethodUniform && m != profile.MethodActTail && m != profile.MethodGreedy {
			return fmt.Errorf("--methods: %q: want uniform, acttail or greedy", m)
		}
	}
	if _, err := pf.options(0); err != nil {
		return err
	}
	mf.sparse = true
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	calibIDs, err := pf.tokens(l, *calibPath)
	if err != nil {
		return err
	}
	var sets []sweep.Data
	for _, d := range *data {
		raw, err := os.ReadFile(d)
		if err != nil {
			return err
		}
		ids := l.tok.Encode(string(raw), true)
		if *maxEval > 0 && len(ids) > *maxEval {
			ids = ids[:*maxEval]
		}
		sets = append(sets, sweep.Data{Name: filepath.Base(d), Tokens: ids})
	}
	opts, _ := pf.options(0)
	fits, err := profile.Fits(ctx, l.file, opts.Xmin, pf.fitsCache, stderr)
	if err != nil {
		return err
	}
	cfg := sweep.Config{
		Levels: *levels, Methods: *methods, Eps: *epsList, Directions: directions, BlockAverage: pf.blockAverage,
		SMin: pf.sMin, SMax: pf.sMax, Mode: pf.mode, Ctx: *evalCtx, Stride: *stride, Sparse: *sparseTokens, CalibPasses: *passes,
		Greedy: profile.GreedyOptions{Step: *greedyStep, Refine: *greedyRefine, SMax: pf.sMax},
	}
	start := time.Now()
	rows, err := sweep.Run(ctx, l.engine, l.file, calibIDs, sets, fits, cfg, stderr)
	if err != nil {
		return err
	}
	if err := sweep.Table(stdout, rows); err != nil {
		return err
	}
	if *outDir == "" {
		return nil
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	meta := map[string]any{
		"command": "acttail-gpu bench " + strings.Join(args, " "), "model": l.file.Source, "model_id": plan.Identify(l.file),
		"calib": *calibPath, "calib_tokens": len(calibIDs), "backend": l.engine.Backend.Describe(), "seconds": time.Since(start).Seconds(),
		"config": cfg, "date": time.Now().UTC().Format(time.RFC3339),
	}
	if err := sweep.WriteCSV(filepath.Join(*outDir, "sweep.csv"), rows); err != nil {
		return err
	}
	if err := sweep.WriteJSON(filepath.Join(*outDir, "sweep.json"), meta, rows); err != nil {
		return err
	}
	files, err := sweep.Plot(filepath.Join(*outDir, "sweep"), *plotExt, rows)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s/sweep.csv, sweep.json and %s\n", *outDir, strings.Join(files, ", "))
	return nil
}
