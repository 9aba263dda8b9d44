package attend

import (
	"math"
	"math/rand/v2"
	"testing"
)

// reference is the attention of the package comment in float64.
func reference(q, kc, vc []float32, s Shape) []float64 {
	hd, kvDim, group := s.HeadDim, s.NKVHeads*s.HeadDim, s.NHeads/s.NKVHeads
	out := make([]float64, s.Rows*s.NHeads*hd)
	for j := range s.Jobs() {
		r, h := j/s.NHeads, j%s.NHeads
		n, off := s.Pos0+r+1, (h/group)*hd
		sc := make([]float64, n)
		m := math.Inf(-1)
		for t := range n {
			for i := range hd {
				sc[t] += float64(q[j*hd+i]) * float64(kc[t*kvDim+off+i])
			}
			sc[t] /= math.Sqrt(float64(hd))
			m = max(m, sc[t])
		}
		var sum float64
		for t := range sc {
			sc[t] = math.Exp(sc[t] - m)
			sum += sc[t]
		}
		for t, a := range sc {
			for i := range hd {
				out[j*hd+i] += a / sum * float64(vc[t*kvDim+off+i])
			}
		}
	}
	return out
}

func randVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

// TestHeads checks every instruction set against the float64 reference on
// fresh random inputs: head widths on and off the vector paths (multiples
// of 64, of 8, and odd), grouped queries, prompts and single decode rows,
// and scores large enough to make the softmax peaked. Tolerance: 1e-5 of
// the largest value, the float32 rounding of sums over a few hundred
// positions with room to spare.
func TestHeads(t *testing.T) {
	defer setISA(ISA())
	rng := rand.New(rand.NewPCG(7, uint64(rand.Int64())))
	shapes := []Shape{
		{Rows: 1, NHeads: 12, NKVHeads: 12, HeadDim: 64, Pos0: 200},
		{Rows: 5, NHeads: 8, NKVHeads: 2, HeadDim: 72, Pos0: 3},
		{Rows: 3, NHeads: 4, NKVHeads: 4, HeadDim: 128, Pos0: 0},
		{Rows: 2, NHeads: 6, NKVHeads: 3, HeadDim: 5, Pos0: 9},
		{Rows: 1, NHeads: 8, NKVHeads: 4, HeadDim: 8, Pos0: 0},
		{Rows: 4, NHeads: 2, NKVHeads: 1, HeadDim: 16, Pos0: 37},
	}
	for _, isa := range []string{"scalar", "avx2"} {
		if setISA(isa) != isa {
			t.Logf("%s: not on this CPU", isa)
			continue
		}
		for _, s := range shapes {
			for _, qs := range []float64{1, 8} { // 8: peaked softmax, scores up to ~±60
				qDim, kvDim := s.NHeads*s.HeadDim, s.NKVHeads*s.HeadDim
				q := randVec(rng, s.Rows*qDim, qs)
				kc, vc := randVec(rng, (s.Pos0+s.Rows)*kvDim, 1), randVec(rng, (s.Pos0+s.Rows)*kvDim, 1)
				want := reference(q, kc, vc, s)
				var vmax float64
				for _, v := range vc {
					vmax = max(vmax, math.Abs(float64(v)))
				}
				out := randVec(rng, s.Rows*qDim, 1)
				keep := append([]float32(nil), out...)
				lo, hi := s.Jobs()/3, s.Jobs() // a range: the jobs before it stay as they were
				Heads(out, q, kc, vc, make([]float32, s.Scratch()), s, lo, hi)
				for i := range out {
					j := i / s.HeadDim
					switch {
					case j < lo && out[i] != keep[i]:
						t.Fatalf("%s %+v: job %d outside [%d,%d) was written", isa, s, j, lo, hi)
					case j >= lo && math.Abs(float64(out[i])-want[i]) > 1e-5*vmax:
						t.Fatalf("%s %+v q×%g: out[%d] = %g, want %g", isa, s, qs, i, out[i], want[i])
					}
				}
			}
		}
	}
}

func TestHeadsChecks(t *testing.T) {
	s := Shape{Rows: 1, NHeads: 2, NKVHeads: 1, HeadDim: 8, Pos0: 3}
	buf := make([]float32, 64)
	for name, f := range map[string]func(){
		"cache":   func() { Heads(buf, buf, buf[:24], buf, buf, s, 0, 2) },
		"jobs":    func() { Heads(buf, buf, buf, buf, buf, s, 0, 3) },
		"scratch": func() { Heads(buf, buf, buf, buf, buf[:3], s, 0, 2) },
		"groups":  func() { Heads(buf, buf, buf, buf, buf, Shape{Rows: 1, NHeads: 3, NKVHeads: 2, HeadDim: 8}, 0, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func BenchmarkHeads(b *testing.B) {
	s := Shape{Rows: 1, NHeads: 12, NKVHeads: 12, HeadDim: 64, Pos0: 191} // 110M, position 192
	rng := rand.New(rand.NewPCG(1, 2))
	q := randVec(rng, 12*64, 1)
	kc, vc := randVec(rng, 192*768, 1), randVec(rng, 192*768, 1)
	out, sc := make([]float32, 768), make([]float32, s.Scratch())
	for range b.N {
		Heads(out, q, kc, vc, sc, s, 0, s.Jobs())
	}
}
