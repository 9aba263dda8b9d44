package engine

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/acttail/acttail-gpu/internal/hostpick"
	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

// randomModel builds a small model with fresh random weights in dtype d.
func randomModel(t testing.TB, c model.Config, d model.DType, seed uint64) *model.Checkpoint {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	m := model.New(c)
	m.Source = "random"
	for _, ns := range c.Shapes() {
		v := make([]float32, model.Elems(ns.Shape))
		scale := 1.0
		if len(ns.Shape) == 2 {
			scale = 1 / math.Sqrt(float64(ns.Shape[1]))
		}
		for i := range v {
			if len(ns.Shape) == 1 {
				v[i] = float32(1 + 0.2*r.NormFloat64())
			} else {
				v[i] = float32(r.NormFloat64() * scale)
			}
		}
		dt := d
		if len(ns.Shape) == 1 {
			dt = model.F32
		}
		b, err := model.Encode(v, dt)
		if err != nil {
			t.Fatal(err)
		}
		m.Add(&model.Tensor{Name: ns.Name, DType: dt, Shape: ns.Shape, Data: b})
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	return m
}

func smallConfig() model.Config {
	return model.Config{Arch: "llama", Dim: 64, HiddenDim: 96, NLayers: 2, NHeads: 8, NKVHeads: 2, HeadDim: 8,
		VocabSize: 97, SeqLen: 40, NormEps: 1e-5, RopeTheta: 10000}
}

// compare checks engine logits against the float64 reference for every
// position. Tolerance: 1e-4 of the largest |logit| of the row plus 1e-5
// (fp32 accumulation over a few hundred terms).
func compare(t *testing.T, m *model.Checkpoint, tokens []int, maxRows int, tol float64) {
	t.Helper()
	e, err := Load(cpu.New(0), m)
	if err != nil {
		t.Fatal(err)
	}
	ref := newRef(m)
	V := m.Config.VocabSize
	s := e.NewState(0, maxRows)
	got := make([]float32, len(tokens)*V)
	if err := s.Forward(tokens, got, true); err != nil {
		t.Fatal(err)
	}
	// the same tokens one at a time (decode path) must agree too
	s2 := e.NewState(0, maxRows)
	one := make([]float32, V)
	for p, tok := range tokens {
		want := ref.step(tok)
		if err := s2.Forward([]int{tok}, one, false); err != nil {
			t.Fatal(err)
		}
		var scale float64
		for _, w := range want {
			scale = math.Max(scale, math.Abs(w))
		}
		for i, w := range want {
			if d := math.Abs(float64(got[p*V+i]) - w); d > tol*scale+1e-5 || math.IsNaN(d) {
				t.Fatalf("prefill pos %d logit %d: got %g, want %g", p, i, got[p*V+i], w)
			}
			if d := math.Abs(float64(one[i]) - w); d > tol*scale+1e-5 || math.IsNaN(d) {
				t.Fatalf("decode pos %d logit %d: got %g, want %g", p, i, one[i], w)
			}
		}
	}
}

func randomTokens(n, vocab int, seed uint64) []int {
	r := rand.New(rand.NewPCG(seed, 1))
	ts := make([]int, n)
	for i := range ts {
		ts[i] = r.IntN(vocab)
	}
	return ts
}

func TestForwardMatchesReference(t *testing.T) {
	cases := []struct {
		name    string
		mod     func(*model.Config)
		dtype   model.DType
		maxRows int
	}{
		{"f32", nil, model.F32, 64},
		{"f32-chunked", nil, model.F32, 5},
		{"tied", func(c *model.Config) { c.TiedOutput = true }, model.F32, 7},
		{"mha-odd-hidden", func(c *model.Config) { c.NKVHeads = 8; c.HiddenDim = 172 }, model.F32, 64},
		{"f16", nil, model.F16, 64},
		{"bf16", nil, model.BF16, 3},
		{"q8_0", nil, model.Q8_0, 64},
		{"llama3-rope", func(c *model.Config) {
			c.RopeTheta = 500000
			c.RopeScale = &model.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 16}
		}, model.F32, 64},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := smallConfig()
			if tc.mod != nil {
				tc.mod(&c)
			}
			m := randomModel(t, c, tc.dtype, uint64(i+1))
			compare(t, m, randomTokens(23, c.VocabSize, uint64(i)), tc.maxRows, 1e-4)
		})
	}
}

func loadStories(t *testing.T) *model.Checkpoint {
	m, err := llama2c.Load(filepath.Join(testfiles.Stories260K(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestStories260KMatchesReference(t *testing.T) {
	m := loadStories(t)
	compare(t, m, randomTokens(40, m.Config.VocabSize, 3), 16, 1e-4)
}

func TestGenerateStopsAndCounts(t *testing.T) {
	m := randomModel(t, smallConfig(), model.F32, 9)
	e, err := Load(cpu.New(1), m)
	if err != nil {
		t.Fatal(err)
	}
	s := e.NewState(0, 8)
	var got []int
	st, err := s.Generate(context.Background(), []int{1, 2, 3}, GenOptions{MaxTokens: 5}, func(id int) error {
		got = append(got, id)
		return nil
	})
	if err != nil || len(got) != 5 || st.GenTokens != 5 || st.Reason != "length" {
		t.Fatalf("got %v, %+v, %v", got, st, err)
	}
	// Greedy generation equals argmax of the reference at each step.
	ref := newRef(m)
	var last []float64
	for _, tok := range []int{1, 2, 3} {
		last = ref.step(tok)
	}
	for _, tok := range got {
		best := 0
		for i, v := range last {
			if v > last[best] {
				best = i
			}
		}
		if best != tok {
			t.Fatalf("greedy token %d, reference argmax %d", tok, best)
		}
		last = ref.step(tok)
	}
	// An end token stops generation before it is emitted: with the last
	// greedy token as the end token, generation stops at its first occurrence.
	k := slices.Index(got, got[len(got)-1])
	s.Reset()
	st, err = s.Generate(context.Background(), []int{1, 2, 3}, GenOptions{MaxTokens: 5, IsEnd: func(id int) bool { return id == got[k] }}, func(int) error { return nil })
	if err != nil || st.GenTokens != k || st.Reason != "stop" {
		t.Fatalf("stop: %+v %v", st, err)
	}
	// The context bounds generation.
	s.Reset()
	st, err = s.Generate(context.Background(), make([]int, 38), GenOptions{Sample: sample.Options{Temperature: 1, Seed: 1}}, func(int) error { return nil })
	if err != nil || st.GenTokens != 3 {
		t.Fatalf("context: %+v %v", st, err)
	}
	s.Reset()
	if _, err := s.Generate(context.Background(), make([]int, 41), GenOptions{}, func(int) error { return nil }); err == nil {
		t.Fatal("prompt longer than the context accepted")
	}
	if err := s.Forward([]int{97}, make([]float32, 97), false); err == nil {
		t.Fatal("out-of-vocabulary token accepted")
	}
}

// TestGenerateOnPicker checks that Generate picks on a backend.Chainer
// when the options need no truncation, reading no logits row after the
// prompt's, and gets the host's tokens; with top-k it reads the logits.
func TestGenerateOnPicker(t *testing.T) {
	m := randomModel(t, smallConfig(), model.F32, 12)
	gen := func(b backend.Backend, o sample.Options) []int {
		e, err := Load(b, m)
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		_, err = e.NewState(0, 8).Generate(context.Background(), []int{1, 2, 3}, GenOptions{MaxTokens: 12, Sample: o},
			func(id int) error { got = append(got, id); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, o := range []sample.Options{{}, {Temperature: 0.9, Seed: 4}, {Temperature: 0.9, Seed: 4, TopK: 5}} {
		want := gen(cpu.New(1), o)
		hp := &hostpick.Backend{Backend: cpu.New(1), Vocab: m.Config.VocabSize}
		got := gen(hp, o)
		if !slices.Equal(got, want) {
			t.Errorf("%+v: picker tokens %v, host %v", o, got, want)
		}
		if o.Plain() && (hp.Picks != 11 || hp.Rows != 1) {
			t.Errorf("%+v: %d picks and %d logits rows read, want 11 and 1 (the prompt's)", o, hp.Picks, hp.Rows)
		}
		if !o.Plain() && (hp.Picks != 0 || hp.Rows != 12) {
			t.Errorf("%+v (truncated): %d picks and %d logits rows read, want 0 and 12", o, hp.Picks, hp.Rows)
		}
	}
}

// TestGenerateChainedStops checks the chained loop where it must undo the
// step it queued ahead: an end token, then a second Generate on the same
// state, must give the host's tokens and positions; so must the context
// filling up.
func TestGenerateChainedStops(t *testing.T) {
	m := randomModel(t, smallConfig(), model.F32, 13)
	run := func(b backend.Backend, ctxLen int, end func(int) bool) ([]int, []int) {
		e, err := Load(b, m)
		if err != nil {
			t.Fatal(err)
		}
		s := e.NewState(ctxLen, 8)
		var got, pos []int
		for _, prompt := range [][]int{{1, 2, 3}, {4}} {
			_, err := s.Generate(context.Background(), prompt, GenOptions{MaxTokens: 10, IsEnd: end, Sample: sample.Options{Temperature: 0.7, Seed: 9}},
				func(id int) error { got = append(got, id); return nil })
			if err != nil && !errors.Is(err, ErrContextFull) {
				t.Fatal(err)
			}
			pos = append(pos, s.Pos)
		}
		return got, pos
	}
	free, _ := run(cpu.New(1), 0, nil)
	endTok := free[5]
	for _, tc := range []struct {
		name string
		ctx  int
		end  func(int) bool
	}{
		{"end token", 0, func(id int) bool { return id == endTok }},
		{"context", 9, nil},
	} {
		want, wantPos := run(cpu.New(1), tc.ctx, tc.end)
		got, gotPos := run(&hostpick.Backend{Backend: cpu.New(1), Vocab: m.Config.VocabSize}, tc.ctx, tc.end)
		if !slices.Equal(got, want) || !slices.Equal(gotPos, wantPos) {
			t.Errorf("%s: chained %v at positions %v, host %v at %v", tc.name, got, gotPos, want, wantPos)
		}
	}
}

// The cache grows as the sequence does (256 positions, then doubling, up
// to the context), in prefill chunks and in decode steps, with the
// reference's logits across every growth; Bytes counts what the state
// holds.
func TestCacheGrows(t *testing.T) {
	c := smallConfig()
	c.SeqLen = 700
	m := randomModel(t, c, model.F32, 31)
	compare(t, m, randomTokens(600, c.VocabSize, 9), 64, 1e-4)

	e, err := Load(cpu.New(0), m)
	if err != nil {
		t.Fatal(err)
	}
	s := e.NewState(0, 8)
	held := func() int64 { // what the state's buffers hold, in bytes
		var n int
		for l := range s.kc {
			n += s.kc[l].Len() + s.vc[l].Len()
		}
		for _, b := range []backend.Buffer{s.sc.x, s.sc.xb, s.sc.xb2, s.sc.q, s.sc.k, s.sc.v, s.sc.att, s.sc.hb, s.sc.hb2, s.sc.logits} {
			n += b.Len()
		}
		return 4 * int64(n)
	}
	logits := make([]float32, c.VocabSize)
	for _, tc := range []struct{ pos, room int }{{0, 256}, {256, 256}, {257, 512}, {512, 512}, {513, 700}, {700, 700}} {
		if n := tc.pos - s.Pos; n > 0 {
			if err := s.Forward(randomTokens(n, c.VocabSize, uint64(tc.pos)), logits, false); err != nil {
				t.Fatal(err)
			}
		}
		if s.kvCap != tc.room || s.Bytes() != e.StateBytes(tc.room, 8) || s.Bytes() != held() {
			t.Fatalf("at position %d: room %d (want %d), Bytes %d, StateBytes %d, buffers %d", s.Pos, s.kvCap, tc.room, s.Bytes(), e.StateBytes(tc.room, 8), held())
		}
	}
	if err := s.Forward([]int{1}, logits, false); !errors.Is(err, ErrContextFull) {
		t.Fatalf("a token past the context: %v", err)
	}
	small := e.NewState(100, 4)
	if small.kvCap != 100 {
		t.Fatalf("a state of context 100 starts with room %d", small.kvCap)
	}
	s.Close()
}
