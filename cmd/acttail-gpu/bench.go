package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
	isSweep := fs.Bool("sparsity-sweep", false, "run the accuracy and speed sweep over sparsity levels and allocation methods")
	calibPath := fs.String("calib", "", "calibration text (required by --mode threshold and the greedy method)")
	data := fs.StringArray("data", nil, "evaluation text; repeat for several (none: a speed-only sweep)")
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
	greedyTokens := fs.Int("greedy-tokens", 1024, "greedy search: score candidates on the first N calibration tokens (0: all)")
	passes := fs.Int("calib-passes", 3, "threshold mode: calibration passes")
	speed := fs.Bool("speed", true, "also time every row: prefill and batch-1 decode tokens/s, decode latency, joules per token (--speed=false: accuracy only)")
	prefillTokens := fs.Int("prefill-tokens", 128, "speed: prompt length (the prompt runs dense)")
	decodeTokens := fs.Int("decode-tokens", 128, "speed: greedy decode steps after the prompt, sparse under each row's plan")
	speedRepeats := fs.Int("speed-repeats", 3, "speed: timed runs per row; the median is reported")
	outDir := fs.String("out-dir", "", "write sweep.csv, sweep.json and plots here")
	replot := fs.Bool("replot", false, "only redraw the plots of --out-dir from its sweep.json")
	plotExt := fs.String("plot-format", "png", "plot format: png or svg")
	pf.register(fs)
	fs.Lookup("method").Hidden = true
	if err := parse(fs, args); err != nil {
		return err
	}
	if *replot {
		if *outDir == "" {
			return fmt.Errorf("--replot needs --out-dir")
		}
		rows, err := sweep.ReadJSON(filepath.Join(*outDir, "sweep.json"), nil)
		if err != nil {
			return err
		}
		files, err := sweep.Plot(filepath.Join(*outDir, "sweep"), *plotExt, rows)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "redrew %s\n", strings.Join(files, ", "))
		return nil
	}
	if !*isSweep {
		return usageError(fs, "say what to run: --sparsity-sweep")
	}
	if len(*data) == 0 && !*speed {
		return fmt.Errorf("nothing to measure: give --data, or leave --speed on for a speed-only sweep")
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
	opts, err := pf.options(0)
	if err != nil {
		return err
	}
	cfg := sweep.Config{
		Levels: *levels, Methods: *methods, Eps: *epsList, Directions: directions, BlockAverage: pf.blockAverage,
		SMin: pf.sMin, SMax: pf.sMax, Mode: pf.mode, Ctx: *evalCtx, Stride: *stride, Sparse: *sparseTokens, CalibPasses: *passes,
		Greedy:       profile.GreedyOptions{Step: *greedyStep, Refine: *greedyRefine, SMax: pf.sMax},
		GreedyTokens: *greedyTokens,
	}
	if why := cfg.NeedsCalib(); why != "" && *calibPath == "" && pf.calibSample == 0 {
		return fmt.Errorf("%s: give --calib or --calib-sample", why)
	}
	if *speed {
		cfg.Speed = sweep.SpeedOptions{On: true, PrefillTokens: *prefillTokens, DecodeTokens: *decodeTokens, Repeats: *speedRepeats}
		if err := cfg.Speed.Check(0); err != nil {
			return err
		}
	}
	mf.sparse = true
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	var calibIDs []int
	if *calibPath != "" || pf.calibSample > 0 {
		if calibIDs, err = pf.tokens(ctx, l, *calibPath); err != nil {
			return err
		}
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
	// Only ActTail (and the greedy search, which starts from ActTail
	// allocations) needs the spectra, which take minutes on 7B-sized models.
	var fits []htsr.Fit
	if slices.Contains(*methods, profile.MethodActTail) || slices.Contains(*methods, profile.MethodGreedy) {
		if fits, err = profile.Fits(ctx, l.file, opts.Xmin, pf.fitsCache, stderr); err != nil {
			return err
		}
	}
	var energy, noMeter string // the meter, or why there is none
	if *speed {
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
	if *speed {
		fmt.Fprintf(stdout, "\nspeed on %s, dense prompt of %d tokens then %d sparse decode tokens, median of %d runs; energy: %s\n",
			l.engine.Backend.Describe(), *prefillTokens, *decodeTokens, *speedRepeats, energy)
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
	switch {
	case cfg.Speed.Meter != nil:
		meta["energy_meter"] = energy
	case *speed:
		meta["no_energy"] = noMeter
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
