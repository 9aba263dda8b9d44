package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/format/hf"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/progress"
	"github.com/acttail/acttail-gpu/runtime/synth"
)

func runSynth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("synth", "--shape NAME | --dim N --hidden N --layers N ... --out DIR", stdout, stderr)
	shape := fs.String("shape", "", "named shape: "+strings.Join(synth.Presets(), ", "))
	var c model.Config
	fs.IntVar(&c.Dim, "dim", 0, "model width (with explicit dimensions instead of --shape)")
	fs.IntVar(&c.HiddenDim, "hidden", 0, "MLP width")
	fs.IntVar(&c.NLayers, "layers", 0, "number of blocks")
	fs.IntVar(&c.NHeads, "heads", 0, "attention heads")
	fs.IntVar(&c.NKVHeads, "kv-heads", 0, "key/value heads (0: as many as heads)")
	fs.IntVar(&c.VocabSize, "vocab", 32000, "vocabulary size")
	fs.IntVar(&c.SeqLen, "seq-len", 2048, "context length")
	dt := fs.String("dtype", "f32", "weight dtype: f32, f16 or bf16")
	seed := fs.Uint64("seed", 1, "random seed")
	out := fs.String("out", "", "output Hugging Face directory (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError(fs, "--out is required")
	}
	d, err := model.ParseDType(*dt)
	if err != nil {
		return err
	}
	if d == model.Q8_0 {
		return fmt.Errorf("--dtype q8_0: synth writes safetensors (f32, f16, bf16)")
	}
	switch {
	case *shape != "" && c.Dim != 0:
		return fmt.Errorf("give --shape or explicit dimensions, not both")
	case *shape != "":
		if c, err = synth.Preset(*shape); err != nil {
			return err
		}
	default:
		if c.NKVHeads == 0 {
			c.NKVHeads = c.NHeads
		}
		if c.NHeads <= 0 || c.Dim%c.NHeads != 0 {
			return fmt.Errorf("--dim %d must be a positive multiple of --heads %d", c.Dim, c.NHeads)
		}
		c.Arch, c.HeadDim, c.NormEps, c.RopeTheta, c.Synthetic = "llama", c.Dim/c.NHeads, 1e-5, 10000, true
		c.Name = fmt.Sprintf("synthetic-d%d-h%d-l%d", c.Dim, c.HiddenDim, c.NLayers)
		if err := c.Validate(); err != nil {
			return err
		}
	}
	size, err := synth.Size(c, d)
	if err != nil {
		return err
	}
	bar := progress.NewBytes(stderr, size, "generate "+c.Name)
	m, err := synth.NewWith(c, d, *seed, synth.Options{Progress: bar})
	bar.Finish()
	if err != nil {
		return err
	}
	bar = progress.NewBytes(stderr, 0, "write "+*out)
	err = hf.WriteProgress(m, *out, d, bar)
	bar.Finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: synthetic %s, %.1f M parameters, %s\n", *out, c.Name, float64(m.ParamCount())/1e6, d)
	return nil
}
