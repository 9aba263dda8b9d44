package engine

import (
	"math"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// refModel is a plain float64 Llama forward pass over a model.Model,
// written straight from the equations, one token at a time, as the oracle
// for the engine's tests.
type refModel struct {
	c       model.Config
	w       map[string][]float64
	kc, vc  [][]float64 // per layer, pos*kvDim
	freqs   []float64
	pos     int
	outName string
	// mask, if set, zeroes inputs of projection p in layer l before it is
	// applied (sparsity); it must not modify x.
	mask func(l int, p model.Projection, x []float64) []float64
}

func (r *refModel) proj(l int, p model.Projection, x []float64, out int) []float64 {
	if r.mask != nil {
		x = r.mask(l, p, x)
	}
	return matvec(r.w[model.ProjName(l, p)], x, out)
}

func newRef(m *model.Checkpoint) *refModel {
	r := &refModel{c: m.Config, w: map[string][]float64{}}
	for n, t := range m.Tensors {
		f, err := t.Float32()
		if err != nil {
			panic(err)
		}
		d := make([]float64, len(f))
		for i, v := range f {
			d[i] = float64(v)
		}
		r.w[n] = d
	}
	r.outName = model.NameOutput
	if m.Config.TiedOutput {
		r.outName = model.NameEmbed
	}
	r.kc = make([][]float64, r.c.NLayers)
	r.vc = make([][]float64, r.c.NLayers)
	hd := r.c.HeadDim
	for i := 0; i < hd/2; i++ {
		freq := 1 / math.Pow(r.c.RopeTheta, float64(2*i)/float64(hd))
		if s := r.c.RopeScale; s != nil {
			// Llama-3.1: long wavelengths slow down by factor, short ones
			// keep their speed, and the band between blends linearly in
			// orig/wavelength.
			wave := 2 * math.Pi / freq
			lo := float64(s.OriginalMaxPosition) / s.LowFreqFactor
			hi := float64(s.OriginalMaxPosition) / s.HighFreqFactor
			if wave > lo {
				freq /= s.Factor
			} else if wave >= hi {
				a := (float64(s.OriginalMaxPosition)/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				freq = a*freq + (1-a)*freq/s.Factor
			}
		}
		r.freqs = append(r.freqs, freq)
	}
	return r
}

func matvec(w []float64, x []float64, out int) []float64 {
	in := len(x)
	y := make([]float64, out)
	for o := range y {
		var s float64
		for i := range x {
			s += w[o*in+i] * x[i]
		}
		y[o] = s
	}
	return y
}

func rmsnorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	s := 1 / math.Sqrt(ss/float64(len(x))+eps)
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] * s * w[i]
	}
	return y
}

func (r *refModel) rope(v []float64, heads int) {
	hd := r.c.HeadDim
	for h := 0; h < heads; h++ {
		for i := 0; i < hd/2; i++ {
			a := float64(r.pos) * r.freqs[i]
			x0, x1 := v[h*hd+2*i], v[h*hd+2*i+1]
			v[h*hd+2*i] = x0*math.Cos(a) - x1*math.Sin(a)
			v[h*hd+2*i+1] = x0*math.Sin(a) + x1*math.Cos(a)
		}
	}
}

// step runs one token and returns its logits.
func (r *refModel) step(tok int) []float64 {
	c := r.c
	x := append([]float64(nil), r.w[model.NameEmbed][tok*c.Dim:(tok+1)*c.Dim]...)
	hd, kvDim := c.HeadDim, c.KVDim()
	for l := 0; l < c.NLayers; l++ {
		h := rmsnorm(x, r.w[model.AttnNormName(l)], c.NormEps)
		q := r.proj(l, model.ProjQ, h, c.QDim())
		k := r.proj(l, model.ProjK, h, kvDim)
		v := r.proj(l, model.ProjV, h, kvDim)
		r.rope(q, c.NHeads)
		r.rope(k, c.NKVHeads)
		r.kc[l] = append(r.kc[l], k...)
		r.vc[l] = append(r.vc[l], v...)
		att := make([]float64, c.QDim())
		for head := 0; head < c.NHeads; head++ {
			kvh := head / (c.NHeads / c.NKVHeads)
			scores := make([]float64, r.pos+1)
			maxs := math.Inf(-1)
			for t := range scores {
				var s float64
				for i := 0; i < hd; i++ {
					s += q[head*hd+i] * r.kc[l][t*kvDim+kvh*hd+i]
				}
				scores[t] = s / math.Sqrt(float64(hd))
				maxs = math.Max(maxs, scores[t])
			}
			var sum float64
			for t := range scores {
				scores[t] = math.Exp(scores[t] - maxs)
				sum += scores[t]
			}
			for t := range scores {
				for i := 0; i < hd; i++ {
					att[head*hd+i] += scores[t] / sum * r.vc[l][t*kvDim+kvh*hd+i]
				}
			}
		}
		o := r.proj(l, model.ProjO, att, c.Dim)
		for i := range x {
			x[i] += o[i]
		}
		h = rmsnorm(x, r.w[model.FFNNormName(l)], c.NormEps)
		g := r.proj(l, model.ProjGate, h, c.HiddenDim)
		u := r.proj(l, model.ProjUp, h, c.HiddenDim)
		for i := range g {
			g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
		}
		dn := r.proj(l, model.ProjDown, g, c.Dim)
		for i := range x {
			x[i] += dn[i]
		}
	}
	x = rmsnorm(x, r.w[model.NameOutputNorm], c.NormEps)
	r.pos++
	return matvec(r.w[r.outName], x, c.VocabSize)
}
