package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestHalfRoundTrip(t *testing.T) {
	// Every finite half must survive f16 -> f32 -> f16 exactly.
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := F32ToF16(f); got != uint16(h) {
			t.Fatalf("half %#04x -> %g -> %#04x", h, f, got)
		}
	}
}

func TestHalfRounding(t *testing.T) {
	// Against a float64 reference: the chosen half is the nearest one.
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		f := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-25)))
		h := F32ToF16(f)
		got := float64(F16ToF32(h))
		if math.IsInf(got, 0) {
			if math.Abs(float64(f)) < 65504 {
				t.Fatalf("%g overflowed", f)
			}
			continue
		}
		for _, nb := range []uint16{h - 1, h + 1} {
			alt := float64(F16ToF32(nb))
			if math.IsNaN(alt) || math.IsInf(alt, 0) || math.Signbit(alt) != math.Signbit(got) {
				continue
			}
			if math.Abs(alt-float64(f)) < math.Abs(got-float64(f)) {
				t.Fatalf("%g -> %g, but %g is nearer", f, got, alt)
			}
		}
	}
}

func TestBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		f := float32(r.NormFloat64() * 100)
		got := BF16ToF32(F32ToBF16(f))
		if rel := math.Abs(float64(got-f)) / math.Abs(float64(f)); rel > 1.0/256 {
			t.Fatalf("bf16(%g) = %g, rel err %g", f, got, rel)
		}
	}
	if !math.IsNaN(float64(BF16ToF32(F32ToBF16(float32(math.NaN()))))) {
		t.Fatal("NaN lost")
	}
}

func TestEncodeDecode(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	src := make([]float32, 32*7)
	for i := range src {
		src[i] = float32(r.NormFloat64())
	}
	for _, tc := range []struct {
		d   DType
		tol float64 // relative to max |x|
	}{{F32, 0}, {F16, 1e-3}, {BF16, 8e-3}, {Q8_0, 1.0 / 127}} {
		b, err := Encode(src, tc.d)
		if err != nil {
			t.Fatal(err)
		}
		dst := make([]float32, len(src))
		if err := Decode(dst, b, tc.d); err != nil {
			t.Fatal(err)
		}
		for i := range src {
			if math.Abs(float64(dst[i]-src[i])) > tc.tol*4 {
				t.Fatalf("%s: [%d] %g -> %g", tc.d, i, src[i], dst[i])
			}
		}
	}
	if err := Decode(make([]float32, 3), make([]byte, 11), F32); err == nil {
		t.Fatal("short data accepted")
	}
	if _, err := Encode(make([]float32, 31), Q8_0); err == nil {
		t.Fatal("partial Q8_0 block accepted")
	}
}

func TestShapes(t *testing.T) {
	cfg := Config{Dim: 64, HiddenDim: 172, NLayers: 2, NHeads: 8, NKVHeads: 4, HeadDim: 8, VocabSize: 512, SeqLen: 512, NormEps: 1e-5, RopeTheta: 1e4, TiedOutput: true}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := cfg.Shapes()
	if want := 1 + 2*9 + 1; len(s) != want {
		t.Fatalf("%d shapes, want %d", len(s), want)
	}
	m := New(cfg)
	for _, ns := range s {
		m.Add(&Tensor{Name: ns.Name, Shape: ns.Shape, Data: make([]byte, 4*Elems(ns.Shape))})
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	names := m.Names()
	if names[0] != NameEmbed || names[len(names)-1] != NameOutputNorm {
		t.Fatalf("order: %v", names)
	}
	delete(m.Tensors, ProjName(1, ProjDown))
	if err := m.Check(); err == nil {
		t.Fatal("missing tensor not reported")
	}
	for name, edit := range map[string]func(c *Config){
		"heads not multiple of kv heads": func(c *Config) { c.NKVHeads = 3 },
		"context 2^31-1":                 func(c *Config) { c.SeqLen = math.MaxInt32 },
		"context 2^40":                   func(c *Config) { c.SeqLen = 1 << 40 },
		"vocab 2^30":                     func(c *Config) { c.VocabSize = 1 << 30 },
		"dim 2^21":                       func(c *Config) { c.Dim = 1 << 21 },
		"layers 2^20":                    func(c *Config) { c.NLayers = 1 << 20 },
		"odd head dim":                   func(c *Config) { c.HeadDim = 7 },
		"NaN eps":                        func(c *Config) { c.NormEps = math.NaN() },
	} {
		bad := cfg
		edit(&bad)
		if bad.Validate() == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
