package sweep

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/acttail/acttail-gpu/internal/chart"
)

// Table writes the rows as an aligned text table: one perplexity,
// change-against-uniform and realized-sparsity column per evaluation text,
// then, when the sweep was timed, prefill and decode tokens/s, the decode
// speed-up against dense, decode latency percentiles and joules per decoded
// token ("-" where there is no number).
func Table(w io.Writer, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "level\tmethod\tplanned\tprofile s\t")
	for _, r := range rows[0].Results {
		fmt.Fprintf(tw, "%s ppl\tvs uniform\trealized\t", r.Data)
	}
	if rows[0].Speed != nil {
		fmt.Fprint(tw, "prefill tok/s\tdecode tok/s\tspeed-up\tp50 ms\tp99 ms\tJ/token\t")
	}
	fmt.Fprintln(tw)
	for _, row := range rows {
		fmt.Fprintf(tw, "%.2f\t%s\t%.4f\t%.2f\t", row.Level, row.Label, row.Planned, row.ProfileSeconds)
		for _, r := range row.Results {
			fmt.Fprintf(tw, "%.4f\t%s\t%.4f\t", r.Perplexity, pct(r.VsUniform), r.Realized)
		}
		if s := row.Speed; s != nil {
			fmt.Fprintf(tw, "%.1f\t%.2f\t%s\t%.2f\t%.2f\t%s\t", s.PrefillTPS, s.DecodeTPS, num("%.2f×", s.SpeedUp), s.P50, s.P99, num("%.4g", s.JoulesPerToken))
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

func num(format string, v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// WriteCSV writes one line per (row, text), or one per row when the sweep
// had no texts. A timed sweep adds the row's speed columns to each line;
// NaN is an empty field.
func WriteCSV(path string, rows []Row) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	timed := len(rows) > 0 && rows[0].Speed != nil
	w := csv.NewWriter(f)
	head := []string{"level", "method", "label", "eps", "direction", "planned_sparsity", "data", "perplexity", "mean_nll", "realized_sparsity", "vs_uniform", "seconds", "selection", "profile_seconds"}
	if timed {
		head = append(head, "prefill_tokens_per_s", "decode_tokens_per_s", "speedup_vs_dense", "decode_p50_ms", "decode_p99_ms", "joules_per_token", "decode_realized_sparsity")
	}
	w.Write(head)
	for _, row := range rows {
		results := row.Results
		if len(results) == 0 {
			results = []Result{{Perplexity: math.NaN(), MeanNLL: math.NaN(), Realized: math.NaN(), VsUniform: math.NaN(), Seconds: math.NaN()}}
		}
		for _, r := range results {
			line := []string{ff(row.Level), row.Method, row.Label, ff(row.Eps), row.Direction, ff(row.Planned), r.Data,
				ff(r.Perplexity), ff(r.MeanNLL), ff(r.Realized), ff(r.VsUniform), ff(r.Seconds), row.Selection, ff(row.ProfileSeconds)}
			if s := row.Speed; timed && s != nil {
				line = append(line, ff(s.PrefillTPS), ff(s.DecodeTPS), ff(s.SpeedUp), ff(s.P50), ff(s.P99), ff(s.JoulesPerToken), ff(s.Realized))
			}
			w.Write(line)
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

// sweepFile is the JSON layout of WriteJSON and ReadJSON.
type sweepFile[M any] struct {
	Meta M     `json:"meta"`
	Rows []Row `json:"rows"`
}

// WriteJSON writes the rows and the configuration that made them. NaN
// (no uniform row to compare with, no dense row, no energy meter) is null.
func WriteJSON(path string, meta any, rows []Row) error {
	b, err := json.MarshalIndent(sweepFile[any]{meta, rows}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a file WriteJSON wrote: the rows (null back to NaN) and
// the metadata into meta, if meta is not nil.
func ReadJSON(path string, meta any) ([]Row, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f sweepFile[json.RawMessage]
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if meta != nil && f.Meta != nil {
		if err := json.Unmarshal(f.Meta, meta); err != nil {
			return nil, fmt.Errorf("%s: meta: %w", path, err)
		}
	}
	return f.Rows, nil
}

// nullable is a float64 that JSON writes as null when it is not finite
// and reads back from null as NaN.
type nullable float64

func (v nullable) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(v))
}

func (v *nullable) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*v = nullable(math.NaN())
		return nil
	}
	return json.Unmarshal(b, (*float64)(v))
}

// MarshalJSON writes VsUniform as null when it is NaN.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		VsUniform nullable `json:"vs_uniform"`
	}{plain(r), nullable(r.VsUniform)})
}

// UnmarshalJSON reads a null or missing VsUniform as NaN.
func (r *Result) UnmarshalJSON(b []byte) error {
	type plain Result
	v := struct {
		*plain
		VsUniform nullable `json:"vs_uniform"`
	}{(*plain)(r), nullable(math.NaN())}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.VsUniform = float64(v.VsUniform)
	return nil
}

// MarshalJSON writes SpeedUp and JoulesPerToken as null when they are NaN.
func (s Speed) MarshalJSON() ([]byte, error) {
	type plain Speed
	return json.Marshal(struct {
		plain
		SpeedUp        nullable `json:"speedup_vs_dense"`
		JoulesPerToken nullable `json:"joules_per_token"`
	}{plain(s), nullable(s.SpeedUp), nullable(s.JoulesPerToken)})
}

// UnmarshalJSON reads a null or missing SpeedUp or JoulesPerToken as NaN.
func (s *Speed) UnmarshalJSON(b []byte) error {
	type plain Speed
	v := struct {
		*plain
		SpeedUp        nullable `json:"speedup_vs_dense"`
		JoulesPerToken nullable `json:"joules_per_token"`
	}{(*plain)(s), nullable(math.NaN()), nullable(math.NaN())}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.SpeedUp, s.JoulesPerToken = float64(v.SpeedUp), float64(v.JoulesPerToken)
	return nil
}

// Plot draws one line per method against sparsity: perplexity, one file
// per evaluation text (prefix-DATA.ext), and perplexity over uniform's at
// the same level (prefix-DATA-vs-uniform.ext); decode tokens/s
// (prefix-decode-tps.ext) when the sweep was timed; joules per decoded
// token (prefix-joules-per-token.ext) when energy was measured. The dense
// baseline starts every line at level 0. It returns the files written.
func Plot(prefix, ext string, rows []Row) ([]string, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	type plot struct {
		file string
		o    chart.Options
		y    func(Row) float64
	}
	var plots []plot
	for j, r0 := range rows[0].Results {
		name := strings.Map(func(r rune) rune {
			if r == '/' || r == ' ' {
				return '_'
			}
			return r
		}, strings.TrimSuffix(filepath.Base(r0.Data), filepath.Ext(r0.Data)))
		plots = append(plots, plot{name,
			chart.Options{Title: "perplexity vs activation sparsity: " + r0.Data, XLabel: "parameter-weighted sparsity", YLabel: "perplexity (log)", LogY: true, TickEveryX: true},
			func(r Row) float64 { return r.Results[j].Perplexity }})
		if slices.ContainsFunc(rows, func(r Row) bool { return r.Method == "uniform" }) {
			plots = append(plots, plot{name + "-vs-uniform",
				chart.Options{Title: "perplexity relative to uniform allocation: " + r0.Data, XLabel: "parameter-weighted sparsity", YLabel: "perplexity / uniform's (log; below 1 beats uniform)", LogY: true, TickEveryX: true},
				func(r Row) float64 {
					if r.Method == "uniform" {
						return 1
					}
					return 1 + r.Results[j].VsUniform
				}})
		}
	}
	if rows[0].Speed != nil {
		plots = append(plots, plot{"decode-tps",
			chart.Options{Title: "batch-1 decode speed vs activation sparsity", XLabel: "parameter-weighted sparsity", YLabel: "decode tokens/s", TickEveryX: true},
			func(r Row) float64 { return r.Speed.DecodeTPS }})
		if slices.ContainsFunc(rows, func(r Row) bool { return !math.IsNaN(r.Speed.JoulesPerToken) }) {
			plots = append(plots, plot{"joules-per-token",
				chart.Options{Title: "decode energy vs activation sparsity", XLabel: "parameter-weighted sparsity", YLabel: "joules per decoded token", TickEveryX: true},
				func(r Row) float64 { return r.Speed.JoulesPerToken }})
		}
	}
	var files []string
	for _, p := range plots {
		path := fmt.Sprintf("%s-%s.%s", prefix, p.file, ext)
		if err := chart.Lines(path, p.o, byMethod(rows, p.y)); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}

// byMethod makes one series of y against level per row label, in the
// order the labels first appear; a dense row before them starts each
// line at level 0.
func byMethod(rows []Row, y func(Row) float64) []chart.Series {
	var order []string
	lines := map[string]*chart.Series{}
	var dense *Row
	for i, row := range rows {
		if row.Method == "dense" {
			dense = &rows[i]
			continue
		}
		s, ok := lines[row.Label]
		if !ok {
			s = &chart.Series{Name: row.Label}
			if dense != nil {
				s.X, s.Y = []float64{0}, []float64{y(*dense)}
			}
			lines[row.Label] = s
			order = append(order, row.Label)
		}
		s.X = append(s.X, row.Level)
		s.Y = append(s.Y, y(row))
	}
	var series []chart.Series
	for _, n := range order {
		series = append(series, *lines[n])
	}
	return series
}
