package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/backend/cuda"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/fetch"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/progress"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// modelFlags are the flags every command that runs a model shares.
type modelFlags struct {
	path     string
	threads  int
	device   string
	kernels  string
	noGraphs bool
	noBLAS   bool
	noCheck  bool   // skip the NaN/Inf scan of the weights
	plan     string // --plan, for commands that take one
	sparse   bool   // load the projections for sparse products
}

// register adds --model and the device flags.
func (f *modelFlags) register(fs *flagSet) {
	f.registerFile(fs)
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0: all cores)")
	fs.StringVar(&f.device, "device", "auto", "compute device: auto (CUDA when a GPU answers, else CPU), cpu or cuda")
	fs.StringVar(&f.kernels, "kernels", "", "CUDA: load this fatbin instead of the embedded kernels")
	fs.BoolVar(&f.noGraphs, "no-cuda-graphs", false, "CUDA: run decode steps op by op instead of as CUDA graphs")
	fs.BoolVar(&f.noBLAS, "no-cublas", false, "CUDA: run prefill GEMMs on the built-in kernels even where cuBLAS is installed")
	f.registerCheck(fs)
	for _, n := range []string{"threads", "device", "kernels", "no-cuda-graphs", "no-cublas"} {
		deviceFlag(fs, n)
	}
}

// registerCheck adds --no-check, for the commands that read the weights.
func (f *modelFlags) registerCheck(fs *flagSet) {
	fs.BoolVar(&f.noCheck, "no-check", false, "skip the scan of the weights for NaN and infinity at load")
}

// registerFile adds --model alone, for the commands that read the file
// and run nothing (info, convert).
func (f *modelFlags) registerFile(fs *flagSet) {
	fs.StringVar(&f.path, "model", "", "checkpoint: a Hugging Face directory, .gguf file or llama2.c .bin, or a model name: "+strings.Join(fetch.Names(), ", ")+" (downloaded once) (default: stories260K, built in)")
}

// open loads the checkpoint named by the flags (or the default model) and,
// unless --no-check, checks that its weights are finite.
func (f *modelFlags) open(ctx context.Context, stderr io.Writer) (*model.Checkpoint, error) {
	m, err := fetch.Open(ctx, f.path, stderr)
	if err != nil || f.noCheck {
		return m, err
	}
	if err := m.CheckFinite(); err != nil {
		m.Close()
		return nil, fmt.Errorf("%w (--no-check loads it anyway)", err)
	}
	return m, nil
}

// backend returns the compute backend the flags ask for. With auto, a
// machine without a CUDA driver or GPU runs on the CPU and says why.
func (f *modelFlags) backend(stderr io.Writer) (backend.Backend, error) {
	if f.threads < 0 {
		return nil, fmt.Errorf("--threads %d: must be ≥ 0", f.threads)
	}
	switch f.device {
	case "cpu":
		return cpu.New(f.threads), nil
	case "cuda", "auto":
		b, err := cuda.New(cuda.Options{Kernels: f.kernels, NoGraphs: f.noGraphs, NoBLAS: f.noBLAS})
		if err == nil {
			return b, nil
		}
		if f.device == "cuda" {
			return nil, fmt.Errorf("--device cuda: %w", err)
		}
		if !cuda.NoGPU(err) {
			fmt.Fprintf(stderr, "warning: CUDA backend unavailable (%v); running on the CPU\n", err)
		}
		return cpu.New(f.threads), nil
	}
	return nil, fmt.Errorf("--device %q: want auto, cpu or cuda", f.device)
}

// contextLength is the context a --ctx value asks of l: 0 is the model's;
// more than the model's is refused, since the engine runs no further than
// the checkpoint declares.
func (l *loaded) contextLength(asked int) (int, error) {
	n := l.engine.Config.SeqLen
	switch {
	case asked < 0:
		return 0, fmt.Errorf("--ctx %d: must be ≥ 0", asked)
	case asked == 0:
		return n, nil
	case asked > n:
		return 0, fmt.Errorf("--ctx %d is more than the context of %s, %d tokens: give at most %d (0: the model's)", asked, l.file.Source, n, n)
	}
	return asked, nil
}

// loaded is a model ready to run.
type loaded struct {
	file   *model.Checkpoint
	engine *engine.Model
	tok    *tokenizer.Tokenizer
}

func (l *loaded) Close() error {
	err := l.engine.Backend.Close()
	if e := l.file.Close(); err == nil {
		err = e
	}
	return err
}

// load opens the model, its tokenizer and the backend.
func (f *modelFlags) load(ctx context.Context, stderr io.Writer) (*loaded, error) {
	m, err := f.open(ctx, stderr)
	if err != nil {
		return nil, err
	}
	if m.Vocab == nil {
		m.Close()
		return nil, fmt.Errorf("%s has no tokenizer", m.Source)
	}
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: tokenizer: %w", m.Source, err)
	}
	b, err := f.backend(stderr)
	if err != nil {
		m.Close()
		return nil, err
	}
	bar := progress.NewBytes(stderr, m.ByteCount(), "load "+m.Config.Name)
	e, err := engine.LoadWith(b, m, engine.Options{Sparse: f.sparse || f.plan != "", Uploaded: bar.Add})
	bar.Finish()
	if err != nil {
		b.Close()
		m.Close()
		return nil, err
	}
	if m.Config.Synthetic {
		fmt.Fprintf(stderr, "warning: %s is a synthetic random-weight model: its text and perplexity mean nothing\n", m.Source)
	}
	return &loaded{file: m, engine: e, tok: tok}, nil
}
