package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
)

// A tiny sweep on stories260K prints the accuracy and speed table and
// writes the CSV, JSON and plots.
func TestBenchSweep(t *testing.T) {
	data := testfiles.Shared(t, "data/tinystories-eval.txt")
	dir := t.TempDir()
	code, out, errs := cli(t, "bench", "--sparsity-sweep", "--model", stories(t), "--data", data, "--device", "cpu",
		"--levels", "0,0.5", "--methods", "uniform,acttail", "--eps-list", "0.3", "--directions", "larger-alpha-sparser",
		"--ctx", "128", "--max-eval-tokens", "300", "--decode-tokens", "8", "--prefill-tokens", "16", "--speed-repeats", "1",
		"--out-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, s := range []string{"tinystories-eval.txt ppl", "decode tok/s", "speed-up", "p99 ms", "J/token", "acttail eps=0.3 larger-alpha-sparser", "energy: "} {
		if !strings.Contains(out, s) {
			t.Errorf("stdout lacks %q:\n%s", s, out)
		}
	}
	for _, f := range []string{"sweep.csv", "sweep.json", "sweep-tinystories-eval.png", "sweep-decode-tps.png"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	csv, _ := os.ReadFile(filepath.Join(dir, "sweep.csv"))
	if !strings.Contains(string(csv), "decode_tokens_per_s") || strings.Count(string(csv), "\n") != 4 {
		t.Errorf("sweep.csv:\n%s", csv)
	}
	js, _ := os.ReadFile(filepath.Join(dir, "sweep.json"))
	if !strings.Contains(string(js), `"no_energy": "`) || !strings.Contains(string(js), `"decode_tokens_per_s"`) {
		t.Errorf("sweep.json lacks the energy note or the speed:\n%s", js)
	}
}

// Bad sweep flags fail before any model runs, with a message.
func TestBenchBadFlags(t *testing.T) {
	m := stories(t)
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"--levels", "1.5"}, "outside [0, 1)"},
		{[]string{"--methods", "foo"}, "--methods"},
		{[]string{"--selections", "magnitude,l1"}, `--selections: unknown selection "l1"`},
		{[]string{"--selection", "l1"}, "--selection"},
		{[]string{"--plot-format", "gif"}, "--plot-format"},
		{[]string{"--speed=false"}, "--data"},
		{[]string{"--mode", "threshold"}, "--calib"},
		{[]string{"--methods", "uniform,greedy"}, "--calib"},
		{[]string{"--methods", "uniform", "--decode-tokens", "0"}, "decode tokens"},
		{[]string{}, ""}, // no --sparsity-sweep
	} {
		args := append([]string{"bench", "--model", m}, tc.args...)
		if len(tc.args) > 0 {
			args = append(args, "--sparsity-sweep")
		}
		code, _, errs := cli(t, args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, errs)
		}
	}
}
