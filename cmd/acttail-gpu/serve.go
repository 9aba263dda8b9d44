package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/power"
	"github.com/acttail/acttail-gpu/runtime/server"
)

// runServe serves the model over an OpenAI-compatible HTTP API until
// SIGINT or SIGTERM, then stops accepting, lets running requests finish
// (for up to --grace) and exits.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "[--model PATH] [--plan NAME=plan.json ...] [flags]", stdout, stderr)
	var mf modelFlags
	mf.register(fs)
	var f serveFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, specs, err := f.config()
	if err != nil {
		return err
	}
	mf.sparse = len(specs) > 0
	runMode, err := planMode(f.mode)
	if err != nil {
		return err
	}
	l, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := modelConfig(&cfg, l, specs, runMode, stderr); err != nil {
		return err
	}
	return f.serve(ctx, cfg, l, stderr)
}

// serveFlags are the flags of `serve` beyond the model flags.
type serveFlags struct {
	plans              []string
	mode, addr, apiKey string
	defModel           string
	grace              time.Duration
	maxMemory, maxBody byteSize
	cfg                server.Config // the settings the flags give directly
}

func (f *serveFlags) register(fs *flagSet) {
	fs.StringArrayVar(&f.plans, "plan", nil, "serve a sparsity plan as model NAME (NAME=plan.json; repeatable); \"dense\" is always served")
	fs.StringVar(&f.mode, "mode", "", "with --plan: topk or threshold (default: each plan's)")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&f.apiKey, "api-key", "", "bearer token every /v1/ request must carry (default: $ACTTAIL_API_KEY; empty: none)")
	cfg := &f.cfg
	fs.IntVar(&cfg.MaxBatch, "max-batch", 8, "most sequences generating at once")
	fs.IntVar(&cfg.Queue, "queue", 64, "most requests waiting for a slot (more get 429)")
	fs.IntVar(&cfg.Context, "ctx", 0, fmt.Sprintf("context length of each sequence (0: the model's, at most %d)", server.DefaultContext))
	fs.Var(&f.maxMemory, "max-memory", "memory the sequences' KV caches may reserve in all (bytes, or with KiB/MiB/GiB; default: half the backend's free memory)")
	f.maxBody = 1 << 20
	fs.Var(&f.maxBody, "max-body", "largest request body (bytes, or with KiB/MiB)")
	fs.IntVar(&cfg.MaxTokensLimit, "max-tokens-limit", 0, "largest max_tokens a request may ask for (0: the context length)")
	fs.IntVar(&cfg.DefaultMaxTokens, "max-tokens", 256, "max_tokens when a request does not say")
	fs.StringVar(&f.defModel, "default-model", "", "model for requests that name none (default: dense)")
	fs.DurationVar(&f.grace, "grace", 30*time.Second, "on shutdown, how long running requests may take to finish")
	fs.IntVar(&cfg.MaxConns, "max-conns", 512, "most connections open at once (more are answered 503)")
	fs.DurationVar(&cfg.BodyTimeout, "body-timeout", 10*time.Second, "how long a request may take to send its body (slower: 408)")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", 30*time.Second, "how long each write of a reply, each stream chunk, may take to reach the client")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 60*time.Second, "how long a kept-alive connection may wait for its next request")
}

// planSpec is one --plan: the plan at path, served as model name.
type planSpec struct{ name, path string }

// config checks the flags and returns the server's settings that need no
// model, and the plans to load.
func (f *serveFlags) config() (server.Config, []planSpec, error) {
	cfg := f.cfg
	for name, v := range map[string]int{"--max-batch": cfg.MaxBatch, "--queue": cfg.Queue, "--max-tokens": cfg.DefaultMaxTokens, "--max-conns": cfg.MaxConns} {
		if v < 1 {
			return cfg, nil, fmt.Errorf("%s %d: must be ≥ 1", name, v)
		}
	}
	if cfg.Context < 0 || cfg.MaxTokensLimit < 0 {
		return cfg, nil, errors.New("--ctx and --max-tokens-limit must be ≥ 0")
	}
	for name, d := range map[string]time.Duration{"--body-timeout": cfg.BodyTimeout, "--write-timeout": cfg.WriteTimeout, "--idle-timeout": cfg.IdleTimeout, "--grace": f.grace} {
		if d <= 0 {
			return cfg, nil, fmt.Errorf("%s %v: must be positive", name, d)
		}
	}
	cfg.MaxBody, cfg.MaxMemory = int64(f.maxBody), int64(f.maxMemory)
	cfg.APIKey = f.apiKey
	if cfg.APIKey == "" {
		cfg.APIKey = os.Getenv("ACTTAIL_API_KEY")
	}
	cfg.Default = f.defModel
	var specs []planSpec
	for _, p := range f.plans {
		name, path, ok := strings.Cut(p, "=")
		if !ok || name == "" || path == "" {
			return cfg, nil, fmt.Errorf("--plan %q: want NAME=plan.json", p)
		}
		specs = append(specs, planSpec{name, path})
	}
	return cfg, specs, nil
}

// modelConfig fills in the settings of cfg that come from the loaded
// model: its context, its plans, the engine and tokenizer, the log and
// the GPU's power.
func modelConfig(cfg *server.Config, l *loaded, specs []planSpec, mode plan.Mode, stderr io.Writer) error {
	var err error
	if cfg.Context, err = l.contextLength(cfg.Context); err != nil {
		return err
	}
	for _, sp := range specs {
		p, err := checkedPlan(l, sp.path)
		if err != nil {
			return err
		}
		cfg.Plans = append(cfg.Plans, server.Plan{Name: sp.name, Plan: p, Mode: mode})
	}
	cfg.Model, cfg.Tokenizer = l.engine, l.tok
	cfg.Log = slog.New(slog.NewTextHandler(stderr, nil))
	if l.engine.Backend.Name() == "cuda" {
		cfg.PowerFunc = gpuPower(stderr)
	}
	return nil
}

// gpuPower is the GPU's power for /metrics, where NVML answers (else nil,
// with a note).
func gpuPower(stderr io.Writer) func() (float64, bool) {
	if _, err := power.GPUPower(0); err != nil {
		fmt.Fprintf(stderr, "note: no GPU power in /metrics: %v\n", err)
		return nil
	}
	return func() (float64, bool) {
		w, err := power.GPUPower(0)
		return w, err == nil
	}
}

// serve listens on --addr and serves cfg until ctx ends, then shuts down
// within --grace.
func (f *serveFlags) serve(ctx context.Context, cfg server.Config, l *loaded, stderr io.Writer) error {
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		srv.Shutdown(context.Background())
		return err
	}
	names := []string{server.DenseModel}
	for _, p := range cfg.Plans {
		names = append(names, p.Name)
	}
	fmt.Fprintf(stderr, "serving %s as %s on http://%s/v1 (%s)\n", l.file.Source, strings.Join(names, ", "), ln.Addr(), l.engine.Backend.Describe())
	budget, ctxLen, perSeq := srv.Memory()
	fmt.Fprintf(stderr, "memory: weights %.1f MiB; context %d; sequence budget %.1f MiB, %d sequences of the full context (%.2f MiB each)\n",
		float64(l.file.ByteCount())/(1<<20), ctxLen, float64(budget)/(1<<20), budget/perSeq, float64(perSeq)/(1<<20))
	if err := srv.Run(ctx, ln, f.grace); errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: the --grace of %v ran out; the requests still running were ended with an error", f.grace)
	} else if err != nil {
		return err
	}
	return nil
}

// byteSize is a flag value in bytes, with an optional KiB, MiB or GiB
// suffix.
type byteSize int64

func (b *byteSize) String() string {
	switch v := int64(*b); {
	case v > 0 && v%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", v>>30)
	case v > 0 && v%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", v>>20)
	case v > 0 && v%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", v>>10)
	default:
		return strconv.FormatInt(v, 10)
	}
}

func (b *byteSize) Set(s string) error {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || v < 1 || v > (1<<62)/mult {
		return fmt.Errorf("%q: want a positive size such as 1048576, 512KiB or 1MiB", s)
	}
	*b = byteSize(v * mult)
	return nil
}

func (b *byteSize) Type() string { return "size" }
