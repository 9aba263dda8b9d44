package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/format"
	"github.com/acttail/acttail-gpu/runtime/format/gguf"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
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

// A checkpoint of NaNs is refused at load, naming the tensor, unless
// --no-check; info still describes it.
func TestNaNWeights(t *testing.T) {
	m, err := format.Load(stories(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tt := range m.Tensors {
		tt.Data = bytes.Repeat(binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(math.NaN()))), len(tt.Data)/4)
	}
	p := filepath.Join(t.TempDir(), "nan.gguf")
	if err := gguf.Write(m, p, model.F32); err != nil {
		t.Fatal(err)
	}
	code, _, errs := cli(t, "generate", "--model", p, "--prompt", "Hi", "--max-tokens", "2")
	if code == 0 || !strings.Contains(errs, `tensor "model.embed_tokens.weight" (F32 [512 64]): element 0 is NaN (--no-check loads it anyway)`) {
		t.Errorf("generate: exit %d: %s", code, errs)
	}
	if code, _, errs := cli(t, "generate", "--model", p, "--prompt", "Hi", "--max-tokens", "2", "--no-check"); code != 0 {
		t.Errorf("generate --no-check: exit %d: %s", code, errs)
	}
	if code, _, errs := cli(t, "info", "--model", p); code != 0 {
		t.Errorf("info: exit %d: %s", code, errs)
	}
}

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
	// the default selection is magnitude (it runs on CUDA too), and the plan names it
	if code, out, errs := cli(t, "profile", "show", p); code != 0 || !strings.Contains(out, "down") || !strings.Contains(out, "selection magnitude\n") {
		t.Fatalf("show: exit %d: %s %s", code, out, errs)
	}
	checkPlot(t, p)
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

// Without --model, from a directory with no shared/ above it and an empty
// cache, the built-in model runs, with no download.
func TestDefaultModelAnywhere(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
	t.Setenv("ACTTAIL_MODEL_DIR", "")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1") // a download would fail
	t.Chdir(home)
	code, out, errs := cli(t, "generate", "--prompt", "Once upon a time", "--max-tokens", "20", "--device", "cpu")
	if code != 0 || !strings.HasPrefix(out, "Once upon a time, there was a little girl named Lily.") {
		t.Fatalf("exit %d: %q %s", code, out, errs)
	}
	if code, out, _ := cli(t, "info"); code != 0 || !strings.Contains(out, "stories260K (built in)") {
		t.Errorf("info: exit %d: %s", code, out)
	}
	if entries, _ := os.ReadDir(home); len(entries) != 0 {
		t.Errorf("wrote %v", entries)
	}
}

// An unknown flag prints the error and the command's usage on stderr and
// exits 2.
func TestUnknownFlag(t *testing.T) {
	for _, cmd := range []string{"generate", "eval", "info", "convert", "synth", "bench", "profile", "devices", "serve"} {
		code, out, errs := cli(t, cmd, "--bogus")
		if code != 2 || out != "" || !strings.Contains(errs, "unknown flag: --bogus") || !strings.Contains(errs, "Usage: acttail-gpu "+cmd+" ") {
			t.Errorf("%s --bogus: exit %d, stdout %q, stderr %q", cmd, code, out, errs)
		}
	}
	code, _, errs := cli(t, "profile", "show", "--bogus", "p.json")
	if code != 2 || !strings.Contains(errs, "unknown flag: --bogus") || !strings.Contains(errs, "Usage: acttail-gpu profile show ") {
		t.Errorf("profile show --bogus: exit %d, %q", code, errs)
	}
}

// Every --help exits 0 and prints its own command's usage on stdout, with
// one default a flag, readable lists, plain bools, and no flag that does
// nothing for the command.
func TestHelp(t *testing.T) {
	summaries := map[string]string{"profile show": subcommands["profile show"]}
	for name, c := range commands {
		summaries[name] = c.summary
	}
	for name, summary := range summaries {
		args := append(strings.Fields(name), "--help")
		code, out, errs := cli(t, args...)
		if code != 0 || errs != "" {
			t.Errorf("%s --help: exit %d, stderr %q", name, code, errs)
		}
		if !strings.HasPrefix(out, "Usage: acttail-gpu "+name+" ") || !strings.Contains(out, capitalize(summary)) {
			t.Errorf("%s --help: not its own usage:\n%s", name, out)
		}
		for _, bad := range []string{"[=true|false]", "0.000000", "`", "(default false)"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s --help shows %q:\n%s", name, bad, out)
			}
		}
		for _, entry := range strings.Split(out, "\n  --") {
			if strings.Count(entry, "(default") > 1 {
				t.Errorf("%s --help: two defaults in %q", name, entry)
			}
		}
		runsModel := name != "info" && name != "convert" && name != "synth" && name != "devices" && name != "profile show"
		if strings.Contains(out, "--threads") != runsModel || strings.Contains(out, "--no-cublas") != runsModel {
			t.Errorf("%s --help: device flags shown %v, want %v", name, !runsModel, runsModel)
		}
	}
	if _, out, _ := cli(t, "bench", "--help"); !strings.Contains(out, "(default 0,0.5,0.6,0.7,0.8,0.9)") || strings.Contains(out, "--method ") {
		t.Errorf("bench --help: levels not shown as a list, or the hidden --method shown:\n%s", out)
	}
	if _, out, _ := cli(t, "generate", "--help"); !strings.Contains(out, "--plan FILE ") {
		t.Errorf("generate --help: --plan's value is not FILE:\n%s", out)
	}
	if code, out, _ := cli(t, "help", "eval"); code != 0 || !strings.HasPrefix(out, "Usage: acttail-gpu eval ") {
		t.Errorf("help eval: exit %d: %s", code, out)
	}
}

// --ctx beyond the model's context is refused, in the same words, by every
// command that takes it.
func TestCtxBeyondModel(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d.txt")
	writeFile(data, []byte("Once upon a time, there was a little girl."))
	for _, args := range [][]string{
		{"generate", "--prompt", "hi", "--ctx", "100000"},
		{"eval", "--data", data, "--ctx", "100000"},
		{"serve", "--ctx", "100000", "--addr", "127.0.0.1:0"},
	} {
		code, _, errs := cli(t, append(args, "--model", stories(t), "--device", "cpu")...)
		if code != 1 || !strings.Contains(errs, "--ctx 100000 is more than the context of") || !strings.Contains(errs, "512 tokens") {
			t.Errorf("%v: exit %d, %q", args, code, errs)
		}
	}
	if code, out, errs := cli(t, "eval", "--model", stories(t), "--data", data, "--ctx", "512", "--device", "cpu"); code != 0 || !strings.Contains(out, "ctx 512") {
		t.Errorf("--ctx 512: exit %d: %s %s", code, out, errs)
	}
}

// A cut checkpoint says it is truncated, by how much.
func TestTruncatedCheckpoint(t *testing.T) {
	raw, err := os.ReadFile(stories(t))
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "t.bin")
	writeFile(cut, raw[:5000])
	code, _, errs := cli(t, "info", "--model", cut)
	if want := fmt.Sprintf("truncated: want %d bytes, have 5000", len(raw)); code != 1 || !strings.Contains(errs, want) {
		t.Errorf("exit %d, %q; want %q", code, errs, want)
	}
}

// checkPlot draws the plan at path with profile show --plot: one file, a
// sparsity panel, and alpha beside it once the plan has alpha.
func checkPlot(t *testing.T, path string) {
	t.Helper()
	dir := t.TempDir()
	size := func(f string) image.Point {
		t.Helper()
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		c, err := png.DecodeConfig(r)
		if err != nil {
			t.Fatal(err)
		}
		return image.Point{c.Width, c.Height}
	}
	one := filepath.Join(dir, "uniform.png")
	if code, _, errs := cli(t, "profile", "show", path, "--plot", one); code != 0 {
		t.Fatalf("show --plot: exit %d: %s", code, errs)
	}
	p, err := plan.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range p.Sites {
		p.Sites[i].Alpha = 2 + float64(i%7)/10
	}
	two := filepath.Join(dir, "acttail.png")
	if err := plotPlan(p, two); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("plots: %v, want one file each", entries)
	}
	if a, b := size(one), size(two); !(b.X > a.X+a.X/2 && b.Y == a.Y) {
		t.Errorf("a plan with alpha plots %v, without %v: want alpha beside sparsity", b, a)
	}
}
