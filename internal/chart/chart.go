// Package chart draws the project's line charts (perplexity against
// sparsity, alpha per layer, ...) with gonum/plot, as PNG or SVG by the
// file name's extension.
package chart

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Series is one line.
type Series struct {
	Name string
	X, Y []float64
}

// Options style a chart.
type Options struct {
	Title, XLabel, YLabel string
	LogY                  bool
	// LegendLeft puts the legend top left, for lines that rise to the right.
	LegendLeft    bool
	Width, Height vg.Length // default 18 cm × 12 cm
}

// Lines writes a line chart with points to path (.png or .svg). Points
// with a non-finite (or, on a log axis, non-positive) Y are left out.
func Lines(path string, o Options, series []Series) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("chart %s: want a .png or .svg file name", path)
	}
	p := plot.New()
	p.Title.Text = o.Title
	p.X.Label.Text = o.XLabel
	p.Y.Label.Text = o.YLabel
	if o.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = o.LegendLeft
	for i, s := range series {
		var pts plotter.XYs
		for j := range s.X {
			y := s.Y[j]
			if math.IsNaN(y) || math.IsInf(y, 0) || (o.LogY && y <= 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: s.X[j], Y: y})
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("chart %s: %w", path, err)
		}
		c := plotutil.Color(i)
		l.Color, sc.Color = c, c
		l.Dashes = plotutil.Dashes(i / 7)
		sc.Shape = plotutil.Shape(i)
		l.Width = vg.Points(1.5)
		p.Add(l, sc)
		p.Legend.Add(s.Name, l, sc)
	}
	w, h := o.Width, o.Height
	if w == 0 {
		w, h = 18*vg.Centimeter, 12*vg.Centimeter
	}
	p.BackgroundColor = color.White
	if err := p.Save(w, h, path); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return nil
}
