package sweep

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/acttail/acttail-gpu/internal/chart"
)

// Table writes the rows as an aligned text table: one perplexity and
// change-against-uniform column pair per evaluation text.
func Table(w io.Writer, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "level\tmethod\tplanned\t")
	for _, r := range rows[0].Results {
		fmt.Fprintf(tw, "%s ppl\tvs uniform\trealized\t", r.Data)
	}
	fmt.Fprintln(tw)
	for _, row := range rows {
		fmt.Fprintf(tw, "%.2f\t%s\t%.4f\t", row.Level, row.Label, row.Planned)
		for _, r := range row.Results {
			fmt.Fprintf(tw, "%.4f\t%s\t%.4f\t", r.Perplexity, pct(r.VsUniform), r.Realized)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%+.1f%%", 100*v)
}

// WriteCSV writes one line per (row, text).
func WriteCSV(path string, rows []Row) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"level", "method", "label", "eps", "direction", "planned_sparsity", "data", "perplexity", "mean_nll", "realized_sparsity", "vs_uniform", "seconds"})
	for _, row := range rows {
		for _, r := range row.Results {
			w.Write([]string{ff(row.Level), row.Method, row.Label, ff(row.Eps), row.Direction, ff(row.Planned), r.Data,
				ff(r.Perplexity), ff(r.MeanNLL), ff(r.Realized), ff(r.VsUniform), ff(r.Seconds)})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func ff(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', 8, 64)
}

// WriteJSON writes the rows and the configuration that made them.
func WriteJSON(path string, meta any, rows []Row) error {
	type jsonResult struct {
		Result
		VsUniform *float64 `json:"vs_uniform,omitempty"`
	}
	type jsonRow struct {
		Row
		Results []jsonResult `json:"results"`
	}
	out := struct {
		Meta any       `json:"meta"`
		Rows []jsonRow `json:"rows"`
	}{Meta: meta}
	for _, r := range rows {
		jr := jsonRow{Row: r}
		for _, x := range r.Results {
			j := jsonResult{Result: x}
			if !math.IsNaN(x.VsUniform) {
				v := x.VsUniform
				j.VsUniform = &v
			}
			j.Result.VsUniform = 0
			jr.Results = append(jr.Results, j)
		}
		out.Rows = append(out.Rows, jr)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Plot draws perplexity against sparsity, one line per method, one file
// per evaluation text: prefix-DATA.ext. The dense baseline starts every
// line at level 0. It returns the files written.
func Plot(prefix, ext string, rows []Row) ([]string, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	var files []string
	for j, r0 := range rows[0].Results {
		var order []string
		lines := map[string]*chart.Series{}
		var dense *Result
		for _, row := range rows {
			if row.Method == "dense" {
				dense = &row.Results[j]
				continue
			}
			s, ok := lines[row.Label]
			if !ok {
				s = &chart.Series{Name: row.Label}
				if dense != nil {
					s.X, s.Y = []float64{0}, []float64{dense.Perplexity}
				}
				lines[row.Label] = s
				order = append(order, row.Label)
			}
			s.X = append(s.X, row.Level)
			s.Y = append(s.Y, row.Results[j].Perplexity)
		}
		var series []chart.Series
		for _, n := range order {
			series = append(series, *lines[n])
		}
		name := strings.Map(func(r rune) rune {
			if r == '/' || r == ' ' {
				return '_'
			}
			return r
		}, strings.TrimSuffix(filepath.Base(r0.Data), filepath.Ext(r0.Data)))
		path := fmt.Sprintf("%s-%s.%s", prefix, name, ext)
		if err := chart.Lines(path, chart.Options{Title: "perplexity vs activation sparsity: " + r0.Data, XLabel: "parameter-weighted sparsity", YLabel: "perplexity (log)", LogY: true}, series); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}
