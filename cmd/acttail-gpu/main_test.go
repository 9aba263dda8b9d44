package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/format"
)

// cli runs one command line and returns its exit status and output.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func stories(t *testing.T) string {
	return filepath.Join(testfiles.Stories260K(t), "stories260K.bin")
}

// Greedy decoding of stories260K from "Once upon a time" gives the story
// the model is known for.
func TestGenerateKnownStory(t *testing.T) {
	code, out, errs := cli(t, "generate", "--model", stories(t), "--prompt", "Once upon a time", "--max-tokens", "40")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
	if !strings.HasPrefix(out, want) {
		t.Fatalf("got %q\nwant prefix %q", out, want)
	}
	if !strings.Contains(errs, "decode: 40 tokens") {
		t.Fatalf("stats line missing: %s", errs)
	}
}

// convert writes stories260K as a Hugging Face directory and as GGUF; all
// three files give bit-identical f32 logits.
func TestConvertedFormatsGiveSameLogits(t *testing.T) {
	dir := t.TempDir()
	hfDir, ggufFile := filepath.Join(dir, "hf"), filepath.Join(dir, "m.gguf")
	for _, args := range [][]string{
		{"convert", "--model", stories(t), "--out", hfDir},
		{"convert", "--model", stories(t), "--out", ggufFile, "--dtype", "f32"},
	} {
		if code, _, errs := cli(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
	}
	tokens := []int{1, 403, 407, 261, 378, 11, 90, 300, 12, 499, 7}
	var ref []float32
	for _, p := range []string{stories(t), hfDir, ggufFile} {
		m, err := format.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.Load(cpu.New(0), m)
		if err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, len(tokens)*m.Config.VocabSize)
		if err := e.NewState(0, 4).Forward(tokens, logits, true); err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = logits
		} else {
			for i := range ref {
				if math.Float32bits(ref[i]) != math.Float32bits(logits[i]) {
					t.Fatalf("%s: logit %d is %g, llama2.c file gives %g", p, i, logits[i], ref[i])
				}
			}
		}
		if m.Vocab == nil || len(m.Vocab.Tokens) != 512 {
			t.Fatalf("%s: vocabulary lost", p)
		}
		m.Close()
	}
	// and the converted ones generate the same story
	for _, p := range []string{hfDir, ggufFile} {
		_, out, _ := cli(t, "generate", "--model", p, "--prompt", "Once upon a time", "--max-tokens", "20")
		if !strings.HasPrefix(out, "Once upon a time, there was a little girl named Lily.") {
			t.Errorf("%s: %q", p, out)
		}
	}
}

func TestEvalJSON(t *testing.T) {
	data := testfiles.Shared(t, "data/tinystories-eval.txt")
	code, out, errs := cli(t, "eval", "--model", stories(t), "--data", data, "--ctx", "128", "--stride", "64", "--max-tokens", "600", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r struct {
		Perplexity   float64 `json:"perplexity"`
		TokensScored int     `json:"tokens_scored"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// stories260K on its own domain: perplexity well below the vocabulary size.
	if r.TokensScored != 599 || !(r.Perplexity > 1 && r.Perplexity < 20) {
		t.Fatalf("%+v", r)
	}
}

func TestInfo(t *testing.T) {
	code, out, _ := cli(t, "info", "--model", stories(t))
	if code != 0 || !strings.Contains(out, "dim 64, hidden 172, 5 layers, 8 heads (4 kv, head dim 8), vocab 512") ||
		!strings.Contains(out, "model.layers.4.mlp.down_proj.weight") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestSynthThenInfo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	if code, _, errs := cli(t, "synth", "--dim", "64", "--hidden", "96", "--layers", "2", "--heads", "4", "--vocab", "300", "--out", dir); code != 0 {
		t.Fatal(errs)
	}
	code, out, _ := cli(t, "info", "--model", dir)
	if code != 0 || !strings.Contains(out, "synthetic   yes") {
		t.Fatalf("%s", out)
	}
	code, _, errs := cli(t, "generate", "--model", dir, "--prompt", "hi", "--max-tokens", "3")
	if code != 0 || !strings.Contains(errs, "synthetic random-weight") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// Bad flags and bad files give an error message and a non-zero status.
func TestBadInput(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.bin")
	if err := writeFile(bad, []byte("not a model at all, just text")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"nosuch"},
		{"generate", "--temperature", "-1", "--model", stories(t)},
		{"generate", "--top-p", "2", "--model", stories(t)},
		{"generate", "--max-tokens", "-5", "--model", stories(t)},
		{"generate", "--model", bad},
		{"generate", "--model", "/does/not/exist"},
		{"eval", "--model", stories(t)},
		{"eval", "--model", stories(t), "--data", "/does/not/exist"},
		{"eval", "--model", stories(t), "--data", stories(t), "--ctx", "64", "--stride", "100"},
		{"convert", "--model", stories(t), "--out", "x", "--to", "onnx"},
		{"convert", "--model", stories(t), "--out", "x", "--dtype", "q8_0"},
		{"synth", "--shape", "gpt-5", "--out", "x"},
		{"generate", "--threads", "-1", "--model", stories(t)},
		{"info", "extra-arg"},
	} {
		code, _, errs := cli(t, args...)
		if code == 0 || errs == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	if code, _, _ := cli(t, "generate", "--help"); code != 0 {
		t.Error("--help is not a failure")
	}
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }

// profile writes a plan that eval and generate accept; impossible targets,
// too-short calibration text and plans for another model are refused with
// a message.
func TestProfilePlanErrors(t *testing.T) {
	dir := t.TempDir()
	calib := testfiles.Shared(t, "data/tinystories-calib.txt")
	p := filepath.Join(dir, "plan.json")
	if code, out, errs := cli(t, "profile", "--model", stories(t), "--calib", calib, "--target", "0.5", "--method", "uniform", "--out", p); code != 0 {
		t.Fatalf("profile: exit %d: %s %s", code, out, errs)
	}
	// the default selection is wina, and the plan names it
	if code, out, errs := cli(t, "profile", "show", p); code != 0 || !strings.Contains(out, "down") || !strings.Contains(out, "selection wina\n") {
		t.Fatalf("show: exit %d: %s %s", code, out, errs)
	}
	short := filepath.Join(dir, "short.txt")
	writeFile(short, []byte("Once upon a time."))
	// a plan for another model: the same shapes, other weights
	other := filepath.Join(dir, "other.gguf")
	if code, _, errs := cli(t, "convert", "--model", stories(t), "--out", other, "--dtype", "f16"); code != 0 {
		t.Fatal(errs)
	}
	bad := filepath.Join(dir, "bad.json")
	writeFile(bad, []byte(`{"version": 1, "mode": "topk"`))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"profile", "--model", stories(t), "--calib", calib, "--target", "1.2", "--out", filepath.Join(dir, "x.json")}, "target"},
		{[]string{"profile", "--model", stories(t), "--calib", calib, "--target", "-0.1", "--out", filepath.Join(dir, "x.json")}, "target"},
		{[]string{"profile", "--model", stories(t), "--calib", short, "--target", "0.5", "--out", filepath.Join(dir, "x.json")}, "shorter than one window"},
		{[]string{"profile", "--model", stories(t), "--calib", calib, "--method", "magic", "--out", filepath.Join(dir, "x.json")}, "method"},
		{[]string{"profile", "--model", stories(t), "--calib", calib, "--selection", "l1", "--out", filepath.Join(dir, "x.json")}, "--selection"},
		{[]string{"eval", "--model", other, "--data", calib, "--plan", p}, "weights differ"},
		{[]string{"eval", "--model", stories(t), "--data", calib, "--plan", bad}, "not a plan file"},
		{[]string{"generate", "--model", stories(t), "--plan", filepath.Join(dir, "missing.json")}, "no such file"},
		{[]string{"profile", "show", bad}, "not a plan file"},
	} {
		code, _, errs := cli(t, tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q (want %q)", tc.args[:2], code, errs, tc.want)
		}
	}
	// the good plan runs
	if code, out, errs := cli(t, "eval", "--model", stories(t), "--data", calib, "--plan", p, "--max-tokens", "300", "--ctx", "128"); code != 0 || !strings.Contains(out, "realized") {
		t.Fatalf("eval with plan: exit %d: %s %s", code, out, errs)
	}
}
