package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/backend/cuda"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/fetch"
	"github.com/acttail/acttail-gpu/runtime/format"
	"github.com/acttail/acttail-gpu/runtime/model"
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
	plan     string // --plan, for commands that take one
	sparse   bool   // load the projections for sparse products
}

func (f *modelFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.path, "model", "", "checkpoint: Hugging Face directory, .gguf file, or llama2.c .bin (default: stories260K)")
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0: all cores)")
	fs.StringVar(&f.device, "device", "auto", "compute device: auto (CUDA when a GPU answers, else CPU), cpu or cuda")
	fs.StringVar(&f.kernels, "kernels", "", "CUDA: load this fatbin instead of the embedded kernels")
	fs.BoolVar(&f.noGraphs, "no-cuda-graphs", false, "CUDA: run decode steps op by op instead of as CUDA graphs")
	fs.BoolVar(&f.noBLAS, "no-cublas", false, "CUDA: run prefill GEMMs on the built-in kernels even where cuBLAS is installed")
}

// open loads the checkpoint named by the flags (or the default model).
func (f *modelFlags) open(ctx context.Context, stderr io.Writer) (*model.Checkpoint, error) {
	path := f.path
	if path == "" {
		dir, err := fetch.DefaultModel(ctx, stderr)
		if err != nil {
			return nil, fmt.Errorf("default model: %w", err)
		}
		path = dir
	}
	return format.Load(path)
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
		if !errors.Is(err, cudadrv.ErrNoDriver) && !errors.Is(err, cudadrv.ErrNoDevice) {
			fmt.Fprintf(stderr, "warning: CUDA backend unavailable (%v); running on the CPU\n", err)
		}
		return cpu.New(f.threads), nil
	}
	return nil, fmt.Errorf("--device %q: want auto, cpu or cuda", f.device)
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
	e, err := engine.LoadWith(b, m, engine.Options{Sparse: f.sparse || f.plan != ""})
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
