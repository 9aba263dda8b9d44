package chart

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestLines(t *testing.T) {
	dir := t.TempDir()
	s := []Series{{"a", []float64{0.5, 0.7, 0.9}, []float64{10, 20, math.NaN()}}, {"b", []float64{0.5, 0.7}, []float64{12, 15}}}
	for _, n := range []string{"x.png", "x.svg"} {
		p := filepath.Join(dir, n)
		if err := Lines(p, Options{Title: "t", XLabel: "x", YLabel: "y", LogY: true}, s); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) < 100 {
			t.Fatalf("%s: %d bytes, %v", n, len(b), err)
		}
		if n == "x.png" && !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatal("not a PNG")
		}
		if n == "x.svg" && !bytes.Contains(b, []byte("<svg")) {
			t.Fatal("not an SVG")
		}
	}
	if err := Lines(filepath.Join(dir, "x.gif"), Options{}, s); err == nil {
		t.Fatal("gif accepted")
	}
}
