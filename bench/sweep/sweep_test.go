package sweep

import (
	"bytes"
	"context"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/internal/hostpick"
	"github.com/acttail/acttail-gpu/profile"
	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/power"
	"github.com/acttail/acttail-gpu/runtime/synth"
)

// tinySweep runs a small timed sweep on a random-weight model.
func tinySweep(t *testing.T, data []Data) []Row {
	return tinySweepWith(t, data, SpeedOptions{On: true, PrefillTokens: 12, DecodeTokens: 6, Repeats: 2})
}

func tinySweepWith(t *testing.T, data []Data, speed SpeedOptions) []Row {
	t.Helper()
	return tinySweepOn(t, data, speed, cpu.New(1))
}

// tinySweepOn is tinySweepWith on backend b.
func tinySweepOn(t *testing.T, data []Data, speed SpeedOptions, b backend.Backend) []Row {
	t.Helper()
	return tinySweepConfig(t, data, b, func(c *Config) { c.Speed = speed })
}

// tinySweepConfig is the tiny sweep on backend b with its config changed
// by set.
func tinySweepConfig(t *testing.T, data []Data, b backend.Backend, set func(*Config)) []Row {
	t.Helper()
	cfg := model.Config{Arch: "llama", Dim: 64, HiddenDim: 96, NLayers: 2, NHeads: 4, NKVHeads: 2, HeadDim: 16,
		VocabSize: 97, SeqLen: 64, NormEps: 1e-5, RopeTheta: 10000}
	m, err := synth.New(cfg, model.F32, 3)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.LoadWith(b, m, engine.Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	fits, err := profile.Fits(context.Background(), m, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := Config{
		Levels: []float64{0.5, 0, 0.8}, Methods: []profile.Method{profile.MethodUniform, profile.MethodActTail}, Eps: []float64{0.3},
		Directions: []alloc.Direction{alloc.LargerAlphaSparser}, SMax: alloc.DefaultSMax, Mode: plan.ModeTopK,
		Ctx: 32, Sparse: eval.SparseSecondHalf,
	}
	set(&c)
	var log bytes.Buffer
	rows, err := Run(context.Background(), e, m, nil, data, fits, c, &log)
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, log.String(), len(rows))
	return rows
}

// checkLog checks that the sweep logged one line a row, its columns
// aligned however long the labels.
func checkLog(t *testing.T, log string, rows int) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "level ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != rows {
		t.Fatalf("%d row lines for %d rows:\n%s", len(lines), rows, log)
	}
	for _, col := range []string{" ppl ", " decode "} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if strings.Index(l, col) != at {
				t.Fatalf("%q not aligned:\n%s", col, strings.Join(lines, "\n"))
			}
		}
	}
}

// Every row of a timed sweep has positive finite rates, ordered latency
// percentiles, and (no meter given) a NaN energy; the dense row is the
// speed-up's reference.
func TestSpeedRows(t *testing.T) {
	rows := tinySweep(t, nil)
	var labels []string
	for _, r := range rows {
		labels = append(labels, r.Label)
	}
	want := []string{"dense", "uniform", "acttail eps=0.3 larger-alpha-sparser", "uniform", "acttail eps=0.3 larger-alpha-sparser"}
	if !slices.Equal(labels, want) {
		t.Fatalf("rows %q, want %q", labels, want)
	}
	for _, r := range rows {
		s := r.Speed
		if s == nil {
			t.Fatalf("%s at %g: no speed", r.Label, r.Level)
		}
		for name, v := range map[string]float64{"prefill": s.PrefillTPS, "decode": s.DecodeTPS, "p50": s.P50, "p99": s.P99, "speed-up": s.SpeedUp} {
			if !(v > 0) || math.IsInf(v, 0) {
				t.Errorf("%s at %g: %s = %g", r.Label, r.Level, name, v)
			}
		}
		if s.P50 > s.P99 {
			t.Errorf("%s at %g: p50 %g > p99 %g", r.Label, r.Level, s.P50, s.P99)
		}
		if !math.IsNaN(s.JoulesPerToken) {
			t.Errorf("%s at %g: %g J/token without a meter", r.Label, r.Level, s.JoulesPerToken)
		}
		// top-k drops exactly the planned inputs on every decode token
		if math.Abs(s.Realized-r.Planned) > 1e-9 {
			t.Errorf("%s at %g: decode realized %g, planned %g", r.Label, r.Level, s.Realized, r.Planned)
		}
	}
	if rows[0].Speed.SpeedUp != 1 {
		t.Errorf("dense speed-up %g, want 1", rows[0].Speed.SpeedUp)
	}
}

// On a backend that chains decode steps on the device (backend.Chainer,
// here internal/hostpick on the CPU), the speed rows run the way generate
// does there: every decode token picked on the backend, no step queued past
// the last, and the same realized sparsity.
func TestSpeedChained(t *testing.T) {
	hp := &hostpick.Backend{Backend: cpu.New(1), Vocab: 97}
	rows := tinySweepOn(t, nil, SpeedOptions{On: true, PrefillTokens: 12, DecodeTokens: 6, Repeats: 2}, hp)
	for _, r := range rows {
		s := r.Speed
		if !(s.DecodeTPS > 0) || s.P50 > s.P99 || math.Abs(s.Realized-r.Planned) > 1e-9 {
			t.Errorf("%s at %g: %+v", r.Label, r.Level, *s)
		}
	}
	// Per row: 6 warm-up tokens, then 2 repeats of 6.
	if want := len(rows) * (6 + 2*6); hp.Picks != want {
		t.Errorf("%d tokens picked on the backend, want %d", hp.Picks, want)
	}
}

// A speed-only sweep writes a table, CSV and JSON with the speed columns,
// NaN as empty and null, and the decode plot (no energy plot: nothing
// measured); a sweep with a text adds its perplexity plot.
func TestSpeedOutputs(t *testing.T) {
	dir := t.TempDir()
	ids := make([]int, 80)
	for i := range ids {
		ids[i] = (i * 7) % 97
	}
	for _, data := range [][]Data{nil, {{Name: "text.txt", Tokens: ids}}} {
		rows := tinySweep(t, data)
		var b strings.Builder
		if err := Table(&b, rows); err != nil {
			t.Fatal(err)
		}
		for _, col := range []string{"prefill tok/s", "decode tok/s", "speed-up", "p50 ms", "p99 ms", "J/token", "1.00×"} {
			if !strings.Contains(b.String(), col) {
				t.Errorf("table lacks %q:\n%s", col, b.String())
			}
		}

		path := filepath.Join(dir, "sweep.csv")
		if err := WriteCSV(path, rows); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := csv.NewReader(f).ReadAll()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != 1+len(rows) {
			t.Fatalf("%d CSV lines for %d rows", len(lines), len(rows))
		}
		col := map[string]int{}
		for i, h := range lines[0] {
			col[h] = i
		}
		for _, h := range []string{"prefill_tokens_per_s", "decode_tokens_per_s", "speedup_vs_dense", "decode_p50_ms", "decode_p99_ms", "joules_per_token"} {
			i, ok := col[h]
			if !ok {
				t.Fatalf("CSV lacks column %s: %v", h, lines[0])
			}
			if empty := lines[1][i] == ""; empty != (h == "joules_per_token") {
				t.Errorf("CSV %s = %q", h, lines[1][i])
			}
		}

		path = filepath.Join(dir, "sweep.json")
		if err := WriteJSON(path, map[string]string{"energy": "no meter here"}, rows); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"joules_per_token": null`) {
			t.Errorf("NaN energy is not null in the JSON")
		}
		var meta struct{ Energy string }
		back, err := ReadJSON(path, &meta)
		if err != nil {
			t.Fatal(err)
		}
		if meta.Energy != "no meter here" || len(back) != len(rows) {
			t.Fatalf("read back %d rows, meta %+v", len(back), meta)
		}
		for i := range rows {
			if !sameRow(rows[i], back[i]) {
				t.Errorf("row %d: wrote %+v %+v, read %+v %+v", i, rows[i], *rows[i].Speed, back[i], *back[i].Speed)
			}
		}

		files, err := Plot(filepath.Join(dir, "sweep"), "svg", rows)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{filepath.Join(dir, "sweep-decode-tps.svg")}
		if data != nil {
			want = append([]string{filepath.Join(dir, "sweep-text.svg"), filepath.Join(dir, "sweep-text-vs-uniform.svg")}, want...)
		}
		if !slices.Equal(files, want) {
			t.Fatalf("plots %v, want %v", files, want)
		}
		for _, p := range files {
			if st, err := os.Stat(p); err != nil || st.Size() == 0 {
				t.Errorf("%s: %v", p, err)
			}
		}
	}
}

// sameRow compares what JSON keeps of a row, NaN equal to NaN.
func sameRow(a, b Row) bool {
	eq := func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) }
	if a.Level != b.Level || a.Label != b.Label || a.Planned != b.Planned || len(a.Results) != len(b.Results) {
		return false
	}
	for i, r := range a.Results {
		s := b.Results[i]
		if r.Data != s.Data || !eq(r.Perplexity, s.Perplexity) || !eq(r.VsUniform, s.VsUniform) {
			return false
		}
	}
	x, y := *a.Speed, *b.Speed
	return x.PrefillTPS == y.PrefillTPS && x.DecodeTPS == y.DecodeTPS && eq(x.SpeedUp, y.SpeedUp) &&
		x.P50 == y.P50 && x.P99 == y.P99 && eq(x.JoulesPerToken, y.JoulesPerToken) && x.Realized == y.Realized
}

// A sweep that needs calibration text and has none, or has nothing to
// measure, says so.
func TestRunRefuses(t *testing.T) {
	for _, c := range []Config{
		{Levels: []float64{0, 0.5}, Methods: []profile.Method{profile.MethodUniform}, Mode: plan.ModeThreshold},
		{Levels: []float64{0.5}, Methods: []profile.Method{profile.MethodGreedy}, Mode: plan.ModeTopK},
		{Levels: []float64{0}, Methods: []profile.Method{profile.MethodUniform}},
	} {
		if _, err := Run(context.Background(), nil, nil, nil, nil, nil, c, nil); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if why := (Config{Levels: []float64{0}, Mode: plan.ModeThreshold}).NeedsCalib(); why != "" {
		t.Errorf("a dense-only sweep needs no calibration: %q", why)
	}
}

// An energy meter's joules are divided over the decoded tokens of every
// repeat.
func TestEnergyPerToken(t *testing.T) {
	m := &fakeMeter{joules: 3}
	rows := tinySweepWith(t, nil, SpeedOptions{On: true, PrefillTokens: 4, DecodeTokens: 5, Repeats: 2, Meter: m})
	for _, r := range rows {
		if got := r.Speed.JoulesPerToken; got != 3.0/5 {
			t.Errorf("%s: %g J/token, want 0.6", r.Label, got)
		}
	}
	if m.starts != 2*len(rows) {
		t.Errorf("meter started %d times for %d rows × 2 repeats", m.starts, len(rows))
	}
	files, err := Plot(filepath.Join(t.TempDir(), "sweep"), "png", rows)
	if err != nil || len(files) != 2 || !strings.HasSuffix(files[1], "sweep-joules-per-token.png") {
		t.Errorf("plots %v, %v: want the decode and energy plots", files, err)
	}
}

// fakeMeter reports a fixed energy per measurement.
type fakeMeter struct {
	joules float64
	starts int
}

func (m *fakeMeter) Start() error { m.starts++; return nil }
func (m *fakeMeter) Stop() (power.Reading, error) {
	return power.Reading{Joules: m.joules, Seconds: 1, Method: "fake"}, nil
}
func (m *fakeMeter) Name() string { return "fake" }

// Every method runs under each selection; a row is compared with uniform
// under magnitude selection (TEAL), and says its selection.
func TestSelections(t *testing.T) {
	ids := make([]int, 80)
	for i := range ids {
		ids[i] = (i * 7) % 97
	}
	data := []Data{{Name: "t", Tokens: ids}}
	rows := tinySweepConfig(t, data, cpu.New(1), func(c *Config) {
		c.Levels, c.Selections = []float64{0.6}, []plan.Selection{plan.SelectMagnitude, plan.SelectWINAShared}
	})
	var labels []string
	for _, r := range rows {
		labels = append(labels, r.Label)
		vs := r.Results[0].VsUniform
		if isRef := r.Label == "uniform"; isRef != math.IsNaN(vs) {
			t.Errorf("%s: vs uniform %g", r.Label, vs)
		}
		if r.Plan != nil && string(r.Plan.Selection) != r.Selection {
			t.Errorf("%s: row selection %q, plan's %q", r.Label, r.Selection, r.Plan.Selection)
		}
	}
	want := []string{"uniform", "uniform +wina-shared", "acttail eps=0.3 larger-alpha-sparser", "acttail eps=0.3 larger-alpha-sparser +wina-shared"}
	if !slices.Equal(labels, want) {
		t.Fatalf("rows %q, want %q", labels, want)
	}
}
