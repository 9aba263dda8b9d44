package sample

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestGreedy(t *testing.T) {
	if got := Greedy([]float32{1, 3, 3, -1}); got != 1 {
		t.Fatalf("greedy = %d, want 1 (first maximum)", got)
	}
	s := New(Options{})
	if got := s.Next([]float32{0, 0.5, 2, 1}); got != 2 {
		t.Fatalf("temperature 0 = %d, want 2", got)
	}
}

// The empirical distribution matches softmax(logits/T) restricted to the
// top-k / top-p set, within a 4-sigma binomial band.
func TestDistribution(t *testing.T) {
	logits := []float32{2, 1, 0.5, 0, -1, -3}
	for _, o := range []Options{
		{Temperature: 1, Seed: 1},
		{Temperature: 0.7, TopK: 3, Seed: 2},
		{Temperature: 1.3, TopP: 0.8, Seed: 3},
	} {
		want := reference(logits, o)
		s := New(o)
		const n = 200000
		count := make([]int, len(logits))
		for range n {
			count[s.Next(logits)]++
		}
		for i, p := range want {
			got := float64(count[i]) / n
			sd := math.Sqrt(p*(1-p)/n) + 1e-9
			if math.Abs(got-p) > 4*sd+1e-6 {
				t.Errorf("%+v: token %d freq %.4f, want %.4f", o, i, got, p)
			}
		}
	}
}

// reference computes the sampling distribution in float64, plainly.
func reference(logits []float32, o Options) []float64 {
	n := len(logits)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	for i := range order { // selection sort, descending
		for j := i + 1; j < n; j++ {
			if logits[order[j]] > logits[order[i]] {
				order[i], order[j] = order[j], order[i]
			}
		}
	}
	keep := n
	if o.TopK > 0 {
		keep = min(keep, o.TopK)
	}
	p := make([]float64, n)
	var sum float64
	for _, i := range order[:keep] {
		p[i] = math.Exp(float64(logits[i]) / o.Temperature)
		sum += p[i]
	}
	if o.TopP > 0 && o.TopP < 1 {
		var cum float64
		cut := keep
		for j, i := range order[:keep] {
			cum += p[i] / sum
			if cum >= o.TopP {
				cut = j + 1
				break
			}
		}
		for _, i := range order[cut:keep] {
			p[i] = 0
		}
	}
	sum = 0
	for _, v := range p {
		sum += v
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

func TestSeedRepeats(t *testing.T) {
	logits := make([]float32, 100)
	r := rand.New(rand.NewPCG(9, 9))
	for i := range logits {
		logits[i] = float32(r.NormFloat64())
	}
	a, b := New(Options{Temperature: 1, Seed: 42}), New(Options{Temperature: 1, Seed: 42})
	for range 100 {
		if a.Next(logits) != b.Next(logits) {
			t.Fatal("same seed, different tokens")
		}
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{{Temperature: -1}, {TopK: -2}, {TopP: 1.5}, {Temperature: math.NaN()}} {
		if o.Validate() == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestUniformStream checks what a device draw relies on: Next at a
// temperature uses exactly one Uniform of the stream (greedy uses none),
// and Plain is true exactly without truncation.
func TestUniformStream(t *testing.T) {
	logits := []float32{0.1, 2, -1, 0.5}
	for _, o := range []Options{{Seed: 3}, {Temperature: 0.8, Seed: 3}, {Temperature: 0.8, TopP: 0.9, Seed: 3}, {Temperature: 0.8, TopK: 2, Seed: 3}} {
		a, b := New(o), New(o)
		a.Next(logits)
		if o.Temperature > 0 {
			b.Uniform()
		}
		if x, y := a.Uniform(), b.Uniform(); x != y {
			t.Errorf("%+v: after Next the stream is at %g, want %g", o, x, y)
		}
	}
	for o, want := range map[Options]bool{{}: true, {Temperature: 1}: true, {Temperature: 1, TopP: 1}: true,
		{Temperature: 1, TopP: 0.9}: false, {Temperature: 1, TopK: 40}: false} {
		if o.Plain() != want {
			t.Errorf("%+v: Plain %v", o, o.Plain())
		}
	}
}
