package synth

import (
	"bytes"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

func TestPresets(t *testing.T) {
	// Parameter counts of the published checkpoints pin down the shapes.
	params := map[string]int64{
		"llama-2-7b":  6738415616,
		"llama-2-13b": 13015864320,
		"llama-3-8b":  8030261248,
		"mistral-7b":  7241732096,
	}
	names := Presets()
	if len(names) != 6 {
		t.Fatalf("presets %v, want 6", names)
	}
	for _, name := range names {
		cfg, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if cfg.Name != name || !cfg.Synthetic || cfg.TiedOutput || cfg.Arch != "llama" || cfg.HeadDim*cfg.NHeads != cfg.Dim {
			t.Errorf("%s: %+v", name, cfg)
		}
		if want, ok := params[name]; ok {
			var n int64
			for _, s := range cfg.Shapes() {
				n += int64(model.Elems(s.Shape))
			}
			if n != want {
				t.Errorf("%s: %d parameters, want %d", name, n, want)
			}
		}
	}
	if cfg, err := Preset("Llama-3-8B"); err != nil || cfg.RopeTheta != 5e5 || cfg.VocabSize != 128256 {
		t.Errorf("case-insensitive lookup: %+v, %v", cfg, err)
	}
	_, err := Preset("gpt-5")
	if err == nil {
		t.Fatal("unknown preset accepted")
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not list %q", err, n)
		}
	}
}

// small is a config fast enough to generate in every test.
func small() model.Config {
	cfg, _ := Preset("stories260k")
	return cfg
}

func TestNewShapes(t *testing.T) {
	for _, dt := range []model.DType{model.F32, model.F16, model.BF16} {
		cfg := small()
		m, err := New(cfg, dt, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Check(); err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		shapes := cfg.Shapes()
		if len(m.Tensors) != len(shapes) {
			t.Fatalf("%s: %d tensors, want %d", dt, len(m.Tensors), len(shapes))
		}
		size, err := Size(cfg, dt)
		if err != nil || size != m.ByteCount() {
			t.Fatalf("%s: Size = %d, %v; model holds %d bytes", dt, size, err, m.ByteCount())
		}
		for _, s := range shapes {
			tn := m.Tensors[s.Name]
			want := dt
			if len(s.Shape) == 1 {
				want = model.F32
			}
			if tn.DType != want {
				t.Fatalf("%s: %s is %s, want %s", dt, s.Name, tn.DType, want)
			}
		}
		if !m.Config.Synthetic || m.Format != "synthetic" || m.Vocab == nil || len(m.Vocab.Tokens) != cfg.VocabSize {
			t.Fatalf("%s: model metadata %+v / %q", dt, m.Config, m.Format)
		}
		norm, err := m.Tensors[model.NameOutputNorm].Float32()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range norm {
			if v != 1 {
				t.Fatalf("norm weight %g, want 1", v)
			}
		}
	}
}

func TestQ8(t *testing.T) {
	// stories260k's down projection has rows of 172: not whole Q8_0 blocks.
	if _, err := New(small(), model.Q8_0, 1); err == nil || !strings.Contains(err.Error(), "down_proj") {
		t.Fatalf("got %v, want an error naming the down projection", err)
	}
	cfg := small()
	cfg.HiddenDim = 192
	m, err := New(cfg, model.Q8_0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, model.DType(42), 1); err == nil {
		t.Fatal("unknown dtype accepted")
	}
	bad := cfg
	bad.NKVHeads = 3
	if _, err := New(bad, model.F32, 1); err == nil {
		t.Fatal("invalid config accepted")
	}
}

func TestDeterminism(t *testing.T) {
	// Large enough that tensors span several chunks.
	cfg := small()
	cfg.VocabSize = 4096
	a, err := NewWith(cfg, model.BF16, 7, Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewWith(cfg, model.BF16, 7, Options{Workers: 5})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, model.BF16, 8)
	if err != nil {
		t.Fatal(err)
	}
	for name, ta := range a.Tensors {
		if !bytes.Equal(ta.Data, b.Tensors[name].Data) {
			t.Fatalf("%s differs between 1 and 5 workers", name)
		}
		if len(ta.Shape) == 2 && bytes.Equal(ta.Data, c.Tensors[name].Data) {
			t.Fatalf("%s is the same for seeds 7 and 8", name)
		}
	}
	// Chunks of one tensor must not repeat each other.
	e := a.Tensors[model.NameEmbed].Data
	half := model.BF16.Bytes(chunkElems)
	if bytes.Equal(e[:half], e[half:2*half]) {
		t.Fatal("first two chunks of the embedding are equal")
	}
}

func TestVariance(t *testing.T) {
	cfg := small()
	cfg.Dim, cfg.HiddenDim, cfg.NHeads, cfg.NKVHeads, cfg.HeadDim = 512, 1024, 8, 8, 64
	cfg.NLayers = 2
	m, err := New(cfg, model.F32, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		sigma float64
	}{
		{model.NameEmbed, 1},
		{model.ProjName(0, model.ProjQ), 1 / math.Sqrt(512)},
		{model.ProjName(1, model.ProjUp), 1 / math.Sqrt(512)},
		{model.ProjName(1, model.ProjO), 1 / math.Sqrt(512*2*2)},
		{model.ProjName(0, model.ProjDown), 1 / math.Sqrt(1024*2*2)},
		{model.NameOutput, 1 / math.Sqrt(512)},
	} {
		v, err := m.Tensors[tc.name].Float32()
		if err != nil {
			t.Fatal(err)
		}
		var sum, sq, amax float64
		for _, x := range v {
			sum += float64(x)
			sq += float64(x) * float64(x)
			amax = max(amax, math.Abs(float64(x)))
		}
		n := float64(len(v))
		mean := sum / n
		std := math.Sqrt(sq/n - mean*mean)
		// At least 256Ki values: the sample std of a uniform draw is within
		// about 0.1% (one standard error); 2% is far outside chance.
		if math.Abs(std/tc.sigma-1) > 0.02 {
			t.Errorf("%s: std %g, want %g ± 2%%", tc.name, std, tc.sigma)
		}
		if math.Abs(mean) > 5*tc.sigma/math.Sqrt(n) {
			t.Errorf("%s: mean %g, want 0 ± %g", tc.name, mean, 5*tc.sigma/math.Sqrt(n))
		}
		if amax > tc.sigma*math.Sqrt(3) {
			t.Errorf("%s: |x| up to %g, beyond the uniform bound %g", tc.name, amax, tc.sigma*math.Sqrt(3))
		}
	}
}

func TestVocab(t *testing.T) {
	v := Vocab(512)
	if len(v.Tokens) != 512 || len(v.Scores) != 512 || len(v.Types) != 512 {
		t.Fatalf("lengths %d %d %d", len(v.Tokens), len(v.Scores), len(v.Types))
	}
	if v.Kind != model.VocabSPM || v.BOS != 1 || v.EOS != 2 || v.UNK != 0 || !v.AddBOS || !v.AddSpacePrefix {
		t.Fatalf("vocab settings %+v", v)
	}
	if v.Tokens[3+0x41] != "<0x41>" || v.Type(3+0x41) != model.TokenByte {
		t.Fatalf("byte token 0x41: %q type %d", v.Tokens[3+0x41], v.Type(3+0x41))
	}
	if v.Tokens[259] != "▁tok259" || v.Type(259) != model.TokenNormal || v.Type(1) != model.TokenControl {
		t.Fatalf("token 259 %q", v.Tokens[259])
	}
	seen := map[string]bool{}
	for i, tok := range v.Tokens {
		if seen[tok] {
			t.Fatalf("token %q repeated", tok)
		}
		seen[tok] = true
		if i > 0 && v.Scores[i] >= v.Scores[i-1] {
			t.Fatalf("scores not descending at %d", i)
		}
	}
	if tiny := Vocab(2); len(tiny.Tokens) != 2 || tiny.BOS != 1 || tiny.EOS != -1 {
		t.Fatalf("Vocab(2) = %+v", tiny)
	}
}

func TestProgress(t *testing.T) {
	cfg := small()
	size, err := Size(cfg, model.F16)
	if err != nil {
		t.Fatal(err)
	}
	bar := progress.New(io.Discard, size, "gen")
	if _, err := NewWith(cfg, model.F16, 1, Options{Progress: bar}); err != nil {
		t.Fatal(err)
	}
	if bar.Count() != size {
		t.Fatalf("progress counted %d bytes, want %d", bar.Count(), size)
	}
}

func BenchmarkNewLlama110M(b *testing.B) {
	cfg, err := Preset("llama-110m")
	if err != nil {
		b.Fatal(err)
	}
	size, err := Size(cfg, model.BF16)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		if _, err := New(cfg, model.BF16, 1); err != nil {
			b.Fatal(err)
		}
	}
}
