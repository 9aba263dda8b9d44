package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/format/gguf"
	"github.com/acttail/acttail-gpu/runtime/format/hf"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("convert", "[--model PATH] --out PATH [--to hf|gguf] [--dtype T]", stdout, stderr)
	var mf modelFlags
	mf.registerFile(fs)
	mf.registerCheck(fs)
	out := fs.String("out", "", "output: a directory for hf, a file for gguf (required)")
	to := fs.String("to", "", "output format: hf or gguf (default: gguf when --out ends in .gguf, else hf)")
	dt := fs.String("dtype", "", "weight dtype: f32, f16, bf16 (hf, gguf) or q8_0 (gguf) (default: the embedding's dtype)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError(fs, "--out is required")
	}
	if *to == "" {
		*to = "hf"
		if strings.HasSuffix(*out, ".gguf") {
			*to = "gguf"
		}
	}
	if *to != "hf" && *to != "gguf" {
		return fmt.Errorf("--to %q: want hf or gguf", *to)
	}
	var d model.DType
	if *dt != "" {
		var err error
		if d, err = model.ParseDType(*dt); err != nil {
			return err
		}
		if d == model.Q8_0 && *to == "hf" {
			return fmt.Errorf("--dtype q8_0 is a GGUF type; safetensors holds f32, f16 or bf16")
		}
	}
	m, err := mf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	if *dt == "" {
		d = m.Tensors[model.NameEmbed].DType
		if d == model.Q8_0 && *to == "hf" {
			d = model.F16
		}
	}
	bar := progress.NewBytes(stderr, 0, "write "+*out)
	if *to == "gguf" {
		err = gguf.WriteProgress(m, *out, d, bar)
	} else {
		err = hf.WriteProgress(m, *out, d, bar)
	}
	bar.Finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s, %s)\n", *out, *to, d)
	return nil
}
