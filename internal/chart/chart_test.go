package chart

import (
	"bytes"
	"fmt"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
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

// Nothing reaches the edge of a figure: markers at the ends of the data,
// end tick labels and the legend all stay inside its white border.
func TestNothingClipped(t *testing.T) {
	var series []Series
	for i := range 9 {
		series = append(series, Series{Name: "a long legend entry " + string(rune('a'+i)),
			X: []float64{0, 1, 2, 3, 4}, Y: []float64{float64(i), 100, float64(-i), 50, float64(9 - i)}})
	}
	p := filepath.Join(t.TempDir(), "f.png")
	panels := []Panel{{Options{Title: "left", XLabel: "layer", YLabel: "y", TickEveryX: true}, series},
		{Options{Title: "right", XLabel: "layer", YLabel: "y"}, series}}
	if err := Figure(p, "a figure", panels); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	const border = 6 // pixels; the margin is 0.4 cm, 15 pixels at 96 dpi
	white := color.RGBAModel.Convert(color.White)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			inside := x >= b.Min.X+border && x < b.Max.X-border && y >= b.Min.Y+border && y < b.Max.Y-border
			if !inside && color.RGBAModel.Convert(img.At(x, y)) != white {
				t.Fatalf("pixel (%d, %d) of %v is drawn: something reaches the edge", x, y, b)
			}
		}
	}
}

// TickEveryX ticks every distinct X of the data.
func TestTickEveryX(t *testing.T) {
	pn := Panel{Options{TickEveryX: true}, []Series{{"a", []float64{0, 1, 2, 3, 4}, []float64{1, 2, 3, 4, 5}}}}
	p, err := newPlot(pn, func(string, ...plot.Thumbnailer) {})
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, tk := range p.X.Tick.Marker.Ticks(p.X.Min, p.X.Max) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if len(labels) != 5 || labels[0] != "0" || labels[4] != "4" {
		t.Errorf("ticks %v, want 0 to 4", labels)
	}
	if !(p.X.Min < 0 && p.X.Max > 4) {
		t.Errorf("x axis [%g, %g] does not reach past the data", p.X.Min, p.X.Max)
	}
}

// The first 24 series differ in marker and dash pattern, so lines that
// overlap can be told apart.
func TestStylesDiffer(t *testing.T) {
	seen := map[string]int{}
	for i := range 24 {
		l, sc, _ := plotter.NewLinePoints(plotter.XYs{{X: 0, Y: 0}})
		style(i, l, sc)
		key := fmt.Sprintf("%T %v", sc.Shape, l.Dashes)
		if j, dup := seen[key]; dup {
			t.Fatalf("series %d and %d look alike: %s", j, i, key)
		}
		seen[key] = i
	}
}
