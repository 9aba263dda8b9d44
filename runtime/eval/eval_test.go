package eval

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testmodel"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
)

// Every token after the first is scored exactly once, and no window
// exceeds ctx.
func TestWindowsCoverEachTokenOnce(t *testing.T) {
	for _, tc := range [][3]int{{10, 4, 2}, {10, 10, 5}, {11, 4, 4}, {100, 32, 7}, {5, 64, 32}, {2, 2, 1}} {
		n, ctx, stride := tc[0], tc[1], tc[2]
		seen := make([]int, n)
		for _, w := range Windows(n, ctx, stride) {
			if w.End-w.Begin > ctx || w.Score > w.End-w.Begin || w.Score < 0 {
				t.Fatalf("%v: bad window %+v", tc, w)
			}
			for i := w.End - w.Score; i < w.End; i++ {
				seen[i]++
			}
		}
		if seen[0] != 0 {
			t.Fatalf("%v: first token scored", tc)
		}
		for i := 1; i < n; i++ {
			if seen[i] != 1 {
				t.Fatalf("%v: token %d scored %d times", tc, i, seen[i])
			}
		}
	}
}

func TestNLL(t *testing.T) {
	l := []float32{1, 2, 3}
	want := -math.Log(math.Exp(2) / (math.Exp(1) + math.Exp(2) + math.Exp(3)))
	if got := NLL(l, 1); math.Abs(got-want) > 1e-12 {
		t.Fatalf("NLL = %g, want %g", got, want)
	}
	if got := NLL([]float32{1000, 0}, 0); math.IsInf(got, 0) || math.IsNaN(got) || got > 1e-9 {
		t.Fatalf("large logits: %g", got)
	}
}

// With one window covering the text, perplexity equals the exponential of
// the mean NLL computed from a plain forward pass over the whole text.
func TestPerplexityMatchesDirect(t *testing.T) {
	m := testmodel.Stories260K(t)
	defer m.Close()
	e, err := engine.Load(cpu.New(0), m)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	toks := make([]int, 90)
	for i := range toks {
		toks[i] = r.IntN(512)
	}
	V := m.Config.VocabSize
	all := make([]float32, len(toks)*V)
	s := e.NewState(0, 128)
	if err := s.Forward(toks, all, true); err != nil {
		t.Fatal(err)
	}
	var nll float64
	for i := 0; i+1 < len(toks); i++ {
		nll += NLL(all[i*V:(i+1)*V], toks[i+1])
	}
	want := math.Exp(nll / float64(len(toks)-1))
	res, err := Perplexity(context.Background(), e.NewState(0, 16), toks, Options{Ctx: 128, Stride: 64})
	if err != nil {
		t.Fatal(err)
	}
	if res.TokensScored != len(toks)-1 || math.Abs(res.Perplexity-want) > 1e-9*want {
		t.Fatalf("got %+v, want perplexity %g", res, want)
	}
	// Shorter windows see less context: still every token once.
	res2, err := Perplexity(context.Background(), e.NewState(32, 16), toks, Options{Ctx: 32, Stride: 8})
	if err != nil || res2.TokensScored != len(toks)-1 {
		t.Fatalf("%+v %v", res2, err)
	}
	if _, err := Perplexity(context.Background(), e.NewState(32, 16), toks[:1], Options{}); err == nil {
		t.Fatal("one token accepted")
	}
}
