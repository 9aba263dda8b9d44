//go:build !cgo

package attend

import "math"

// heads is Heads after the checks, in plain Go without cgo.
func heads(out, q, kc, vc, scratch []float32, s Shape, lo, hi int) {
	group, kvDim, hd := s.NHeads/s.NKVHeads, s.NKVHeads*s.HeadDim, s.HeadDim
	scale := 1 / float32(math.Sqrt(float64(hd)))
	for j := lo; j < hi; j++ {
		r, h := j/s.NHeads, j%s.NHeads
		n, off := s.Pos0+r+1, (h/group)*hd
		qv, sc := q[j*hd:(j+1)*hd], scratch[:n]
		m := float32(math.Inf(-1))
		for t := range n {
			kv := kc[t*kvDim+off : t*kvDim+off+hd]
			var d float32
			for i, a := range qv {
				d += a * kv[i]
			}
			sc[t] = d * scale
			m = max(m, sc[t])
		}
		var sum float32
		for t := range sc {
			sc[t] = float32(math.Exp(float64(sc[t] - m)))
			sum += sc[t]
		}
		o := out[j*hd : (j+1)*hd]
		clear(o)
		inv := 1 / sum
		for t, a := range sc {
			a *= inv
			vv := vc[t*kvDim+off : t*kvDim+off+hd]
			for i := range o {
				o[i] += a * vv[i]
			}
		}
	}
}

// ISA names the instruction set the kernels use: "go" without cgo.
func ISA() string { return "go" }

func setISA(string) string { return "go" }
