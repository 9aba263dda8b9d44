// Package chart draws the project's line charts (perplexity against
// sparsity, alpha per layer, ...) with gonum/plot, as PNG or SVG by the
// file name's extension.
//
// A figure is one or more panels side by side with one legend to their
// right, outside the data, so it covers nothing. Series keep their style
// (colour, marker, dash pattern) by position, so the i-th series of every
// panel looks the same and the legend names it once; no two of the first
// 24 series look alike, and the dash patterns let a line show through
// another that overlaps it. The axes reach a little past the data, so no
// marker or end label is clipped.
package chart

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Series is one line.
type Series struct {
	Name string
	X, Y []float64
}

// Options style one panel.
type Options struct {
	Title, XLabel, YLabel string
	LogY                  bool
	// TickEveryX puts a labelled tick at every distinct X of the data
	// (every layer, every sparsity level) instead of round numbers.
	TickEveryX bool
	// Width and Height are the panel's size (default 18 cm × 12 cm); the
	// legend's column is added to the width.
	Width, Height vg.Length
}

// Panel is one chart of a figure.
type Panel struct {
	Options
	Series []Series
}

// Lines writes a one-panel figure to path (.png or .svg). Points with a
// non-finite (or, on a log axis, non-positive) Y are left out.
func Lines(path string, o Options, series []Series) error {
	return Figure(path, "", []Panel{{Options: o, Series: series}})
}

// margin is the blank border of a figure.
const margin = 0.4 * vg.Centimeter

// Figure writes panels side by side to path (.png or .svg), under title
// (none if empty), with one legend for the series names of all panels.
func Figure(path, title string, panels []Panel) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("chart %s: want a .png or .svg file name", path)
	}
	var plots []*plot.Plot
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.Padding = vg.Points(3)
	var named []string
	w, h := vg.Length(0), vg.Length(0)
	for _, pn := range panels {
		p, err := newPlot(pn, func(name string, thumbs ...plot.Thumbnailer) {
			if !slices.Contains(named, name) {
				named = append(named, name)
				legend.Add(name, thumbs...)
			}
		})
		if err != nil {
			return fmt.Errorf("chart %s: %w", path, err)
		}
		plots = append(plots, p)
		pw, ph := pn.Width, pn.Height
		if pw == 0 {
			pw, ph = 18*vg.Centimeter, 12*vg.Centimeter
		}
		w, h = w+pw, max(h, ph)
	}
	legendW := legendWidth(&legend)
	var titleH vg.Length
	var titleStyle = plot.New().Title.TextStyle
	if title != "" {
		titleH = titleStyle.Rectangle(title).Size().Y + vg.Points(12)
	}
	legendH := legend.Rectangle(draw.Canvas{}).Size().Y
	h = max(h, legendH+titleH+2*margin+vg.Centimeter)
	w += legendW + 2*margin

	var c vg.CanvasWriterTo
	if ext == ".png" {
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))}
	} else {
		c = vgsvg.New(w, h)
	}
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	dc = draw.Crop(dc, margin, -margin, margin, -margin)
	if title != "" {
		titleStyle.XAlign, titleStyle.YAlign = draw.XCenter, draw.YTop
		dc.FillText(titleStyle, vg.Point{X: (dc.Min.X + dc.Max.X - legendW) / 2, Y: dc.Max.Y}, title)
		dc = draw.Crop(dc, 0, 0, 0, -titleH)
	}
	plotArea := draw.Crop(dc, 0, -legendW, 0, 0)
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Centimeter}
	for i, tc := range plot.Align([][]*plot.Plot{plots}, tiles, plotArea)[0] {
		plots[i].BackgroundColor = nil // the figure is white already
		plots[i].Draw(tc)
	}
	// The legend sits right of the panels, level with the top of their
	// data (below any panel title).
	legendTop := vg.Length(0)
	if panels[0].Title != "" {
		legendTop = plots[0].Title.TextStyle.Rectangle(panels[0].Title).Size().Y + plots[0].Title.Padding
	}
	legend.Draw(draw.Crop(dc, dc.Size().X-legendW+vg.Points(8), 0, 0, -legendTop))

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return f.Close()
}

// legendWidth is the width of the legend's column, with room either side.
func legendWidth(l *plot.Legend) vg.Length {
	return l.Rectangle(draw.Canvas{}).Size().X + vg.Points(16)
}

// newPlot builds one panel; add receives each drawn series' legend entry.
func newPlot(pn Panel, add func(name string, thumbs ...plot.Thumbnailer)) (*plot.Plot, error) {
	o := pn.Options
	p := plot.New()
	p.Title.Text = o.Title
	p.X.Label.Text = o.XLabel
	p.Y.Label.Text = o.YLabel
	if o.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	var xs []float64
	for i, s := range pn.Series {
		var pts plotter.XYs
		for j := range s.X {
			y := s.Y[j]
			if math.IsNaN(y) || math.IsInf(y, 0) || (o.LogY && y <= 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: s.X[j], Y: y})
			if !slices.Contains(xs, s.X[j]) {
				xs = append(xs, s.X[j])
			}
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		style(i, l, sc)
		p.Add(l, sc)
		add(s.Name, l, sc)
	}
	pad(&p.X, false)
	pad(&p.Y, o.LogY)
	if o.TickEveryX && len(xs) > 0 && len(xs) <= 40 {
		slices.Sort(xs)
		ticks := make([]plot.Tick, len(xs))
		for i, x := range xs {
			ticks[i] = plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'g', 4, 64)}
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
	}
	return p, nil
}

// palette is Tableau's ten colours, told apart more easily than gonum's
// seven soft ones.
var palette = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
	color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255},
	color.RGBA{227, 119, 194, 255}, color.RGBA{127, 127, 127, 255}, color.RGBA{188, 189, 34, 255},
	color.RGBA{23, 190, 207, 255},
}

// dashes alternate solid, long and short dashes, so a line drawn over
// another lets the one below show through its gaps.
var dashes = [][]vg.Length{{}, {vg.Points(7), vg.Points(3)}, {vg.Points(2), vg.Points(2)}}

// style gives series i its colour, marker and dash pattern: the colour
// cycles every 10, the marker every 8 and the pattern every 3, so the
// first 120 series differ in at least one and the first 24 in the marker
// and the pattern too.
func style(i int, l *plotter.Line, sc *plotter.Scatter) {
	c := palette[i%len(palette)]
	l.Color, sc.Color = c, c
	l.Width = vg.Points(1.5)
	l.Dashes = dashes[i%len(dashes)]
	sc.Shape = plotutil.Shape(i)
	sc.Radius = vg.Points(3.5)
}

// pad widens an axis by 4% of its span each side (on a log axis, in
// decades), so that markers at the ends of the data are not clipped.
func pad(a *plot.Axis, log bool) {
	lo, hi := a.Min, a.Max
	if log {
		if lo <= 0 || hi <= 0 {
			return
		}
		lo, hi = math.Log10(lo), math.Log10(hi)
	}
	d := 0.04 * (hi - lo)
	if d == 0 {
		d = 0.5
		if log {
			d = 0.1
		}
	}
	lo, hi = lo-d, hi+d
	if log {
		lo, hi = math.Pow(10, lo), math.Pow(10, hi)
	}
	a.Min, a.Max = lo, hi
}
