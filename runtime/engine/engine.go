// Package engine is the Llama forward pass, written once against
// backend.Backend. Read it beside the paper's equations: each step of
// the block (block.go) is one backend op.
//
// A Model is the checkpoint on a backend and never changes after Load. A
// State is one sequence: its KV cache, its position, and the activation
// budgets it runs under (State.Budgets, made from a plan by
// Model.Budgets). A Batch runs one decode step of many states, each row
// under its own state's budgets. State.Forward (a prompt, or one token)
// and Batch.Step run the same block.
package engine

import (
	"fmt"
	"math"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Model is a checkpoint uploaded to a backend.
type Model struct {
	Config  model.Config
	Backend backend.Backend
	embed   backend.Weight
	outNorm backend.Weight
	output  backend.Weight // the embedding when tied
	layers  []layer
	freqs   []float32 // RoPE frequency of each pair, scaling applied
	// sparse: the projections were uploaded for SparseMatMul, so a state
	// may run under budgets.
	sparse bool
	// src is the checkpoint, for the column norms of weight-informed
	// budgets (Scales), made on first use.
	src    *model.Checkpoint
	scales scaleCache
}

// Options control Load.
type Options struct {
	// Sparse uploads the projections input-channel-major so that states
	// can run under budgets (State.Budgets). Without it the model runs
	// dense only.
	Sparse bool
	// Uploaded, if set, hears the bytes of each tensor once it is on the
	// backend (m.ByteCount() in all), for a progress bar.
	Uploaded func(bytes int64)
}

type layer struct {
	attnNorm, ffnNorm backend.Weight
	w                 [model.NumProjections]backend.Weight
	in, out           [model.NumProjections]int // each projection's input and output width
}

// Load uploads every tensor of m to b. m must stay open while the Model is
// used (a CPU backend reads the memory-mapped file directly).
func Load(b backend.Backend, m *model.Checkpoint) (*Model, error) {
	return LoadWith(b, m, Options{})
}

// LoadWith is Load with options.
func LoadWith(b backend.Backend, m *model.Checkpoint, o Options) (*Model, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	cfg := m.Config
	e := &Model{Config: cfg, Backend: b, layers: make([]layer, cfg.NLayers), freqs: RopeFreqs(&cfg), sparse: o.Sparse, src: m}
	up := func(name string) (backend.Weight, error) {
		upload := b.Upload
		if o.Sparse && len(m.Tensors[name].Shape) == 2 && name != model.NameEmbed && name != model.NameOutput {
			upload = b.UploadSparse
		}
		w, err := upload(m.Tensors[name])
		if err != nil {
			return nil, fmt.Errorf("load %s on %s: %w", m.Source, b.Name(), err)
		}
		if o.Uploaded != nil {
			o.Uploaded(int64(len(m.Tensors[name].Data)))
		}
		return w, nil
	}
	var err error
	if e.embed, err = up(model.NameEmbed); err != nil {
		return nil, err
	}
	if e.outNorm, err = up(model.NameOutputNorm); err != nil {
		return nil, err
	}
	e.output = e.embed
	if !cfg.TiedOutput {
		if e.output, err = up(model.NameOutput); err != nil {
			return nil, err
		}
	}
	for l := range e.layers {
		L := &e.layers[l]
		if L.attnNorm, err = up(model.AttnNormName(l)); err != nil {
			return nil, err
		}
		if L.ffnNorm, err = up(model.FFNNormName(l)); err != nil {
			return nil, err
		}
		for p := range model.NumProjections {
			if L.w[p], err = up(model.ProjName(l, p)); err != nil {
				return nil, err
			}
			sh := L.w[p].Shape()
			L.out[p], L.in[p] = sh[0], sh[1]
		}
	}
	return e, nil
}

// deviceErr is the backend's sticky device error (backend.Backend.Err),
// if any, as the error of the pass that ends.
func (m *Model) deviceErr() error {
	if err := m.Backend.Err(); err != nil {
		return fmt.Errorf("%s backend: %w", m.Backend.Name(), err)
	}
	return nil
}

// RopeFreqs returns the rotation frequency of each of the head_dim/2 pairs:
// theta^(-2i/head_dim), with Llama-3.1's frequency-dependent scaling when
// the config has it.
func RopeFreqs(c *model.Config) []float32 {
	half := c.HeadDim / 2
	f := make([]float32, half)
	for i := range f {
		freq := math.Pow(c.RopeTheta, -float64(2*i)/float64(c.HeadDim))
		if s := c.RopeScale; s != nil && s.Factor > 0 {
			orig := float64(s.OriginalMaxPosition)
			lowWave, highWave := orig/s.LowFreqFactor, orig/s.HighFreqFactor
			wave := 2 * math.Pi / freq
			switch {
			case wave < highWave:
			case wave > lowWave:
				freq /= s.Factor
			default:
				smooth := (orig/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				freq = (1-smooth)*freq/s.Factor + smooth*freq
			}
		}
		f[i] = float32(freq)
	}
	return f
}
