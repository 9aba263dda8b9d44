package plan

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/model"
)

func testModel(seed byte) *model.Checkpoint {
	c := model.Config{Arch: "llama", Dim: 16, HiddenDim: 24, NLayers: 2, NHeads: 2, NKVHeads: 1, HeadDim: 8, VocabSize: 10, SeqLen: 8, NormEps: 1e-5, RopeTheta: 1e4, Name: "t"}
	m := model.New(c)
	for _, s := range c.Shapes() {
		b := bytes.Repeat([]byte{seed}, 4*model.Elems(s.Shape))
		m.Add(&model.Tensor{Name: s.Name, DType: model.F32, Shape: s.Shape, Data: b})
	}
	return m
}

func testPlan(m *model.Checkpoint) *Plan {
	p := &Plan{Version: Version, Model: Identify(m), Method: "uniform", Mode: ModeTopK, Selection: SelectMagnitude, Target: 0.5, Sites: Sites(&m.Config)}
	for i := range p.Sites {
		p.Sites[i].Sparsity = 0.5
		p.Sites[i].K = KeepFor(0.5, p.Sites[i].DIn)
	}
	p.Realized = WeightedSparsity(p.Sites, true)
	return p
}

func TestSaveLoadCheck(t *testing.T) {
	m := testModel(1)
	p := testPlan(m)
	path := filepath.Join(t.TempDir(), "p.json")
	if err := p.Save(path); err != nil {
		t.Fatal(err)
	}
	q, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Check(m); err != nil {
		t.Fatal(err)
	}
	if q.Realized != 0.5 || len(q.Sites) != 14 || q.Sites[13].Proj != "down" || q.Sites[13].DIn != 24 {
		t.Fatalf("%+v", q)
	}
	// another model's weights are refused
	if err := q.Check(testModel(2)); err == nil || !strings.Contains(err.Error(), "weights differ") {
		t.Fatalf("other weights: %v", err)
	}
}

func TestKeepFor(t *testing.T) {
	for _, tc := range []struct {
		s    float64
		d, k int
	}{{0, 10, 10}, {0.5, 10, 5}, {0.55, 10, 5}, {0.54, 10, 5}, {0.8, 4096, 820}, {0.999, 10, 1}, {0.9, 172, 18}} {
		if got := KeepFor(tc.s, tc.d); got != tc.k {
			t.Errorf("KeepFor(%g, %d) = %d, want %d", tc.s, tc.d, got, tc.k)
		}
	}
}

func TestMalformed(t *testing.T) {
	m := testModel(1)
	good := testPlan(m)
	for name, mut := range map[string]func(*Plan){
		"version":   func(p *Plan) { p.Version = 9 },
		"mode":      func(p *Plan) { p.Mode = "random" },
		"selection": func(p *Plan) { p.Selection = "norm" },
		"no select": func(p *Plan) { p.Selection = "" },
		"target":    func(p *Plan) { p.Target = 1 },
		"sites":     func(p *Plan) { p.Sites = p.Sites[:3] },
		"order":     func(p *Plan) { p.Sites[0], p.Sites[1] = p.Sites[1], p.Sites[0] },
		"k zero":    func(p *Plan) { p.Sites[2].K = 0 },
		"k big":     func(p *Plan) { p.Sites[2].K = 17 },
		"sparsity":  func(p *Plan) { p.Sites[4].Sparsity = -0.1 },
		"threshold": func(p *Plan) { p.Sites[4].Threshold = -1 },
	} {
		p := *good
		p.Sites = append([]Site(nil), good.Sites...)
		mut(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, s := range []string{"", "{", "[]", `{"version":1,"bogus":2}`, `{"version":1} {}`, "null"} {
		if _, err := Decode(strings.NewReader(s)); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	other := testModel(1)
	other.Config.HiddenDim = 32
	if err := good.Check(other); err == nil {
		t.Error("plan for another shape accepted")
	}
}

func FuzzDecode(f *testing.F) {
	good, err := json.Marshal(testPlan(testModel(1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"mode":"topk","target":0.5,"model":{"layers":0},"sites":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(bytes.NewReader(data))
		if err == nil && p.Validate() != nil {
			t.Fatal("Decode returned an invalid plan")
		}
	})
}

// A version 1 file (no selection) loads as magnitude selection; a
// version 2 file must name its selection, and a version 1 file may not.
func TestDecodeVersions(t *testing.T) {
	v2, err := json.Marshal(testPlan(testModel(1)))
	if err != nil {
		t.Fatal(err)
	}
	v1 := strings.Replace(strings.Replace(string(v2), `"version":2`, `"version":1`, 1), `"selection":"magnitude",`, "", 1)
	p, err := Decode(strings.NewReader(v1))
	if err != nil {
		t.Fatalf("version 1: %v", err)
	}
	if p.Version != Version || p.Selection != SelectMagnitude {
		t.Fatalf("version 1 read as version %d, selection %q", p.Version, p.Selection)
	}
	for name, tc := range map[string]struct{ json, want string }{
		"v2 without selection": {strings.Replace(string(v2), `"selection":"magnitude",`, "", 1), "has no selection"},
		"v2 bad selection":     {strings.Replace(string(v2), `"selection":"magnitude"`, `"selection":"l1"`, 1), `unknown selection "l1"`},
		"v1 with selection":    {strings.Replace(string(v2), `"version":2`, `"version":1`, 1), "came with version 2"},
		"v3":                   {strings.Replace(string(v2), `"version":2`, `"version":3`, 1), "versions 1 to 2"},
	} {
		if _, err := Decode(strings.NewReader(tc.json)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
	for _, s := range Selections() {
		if got, err := ParseSelection(string(s)); err != nil || got != s {
			t.Errorf("ParseSelection(%q) = %q, %v", s, got, err)
		}
	}
}

// ParseMode reads the two modes and refuses anything else, naming both.
func TestParseMode(t *testing.T) {
	for _, m := range []Mode{ModeTopK, ModeThreshold} {
		if got, err := ParseMode(string(m)); err != nil || got != m {
			t.Errorf("ParseMode(%q) = %q, %v", m, got, err)
		}
	}
	for _, s := range []string{"", "TopK", "dense"} {
		if _, err := ParseMode(s); err == nil || !strings.Contains(err.Error(), "topk or threshold") {
			t.Errorf("ParseMode(%q): %v", s, err)
		}
	}
}
