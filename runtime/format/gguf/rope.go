package gguf

import (
	"fmt"
	"math"
	"strconv"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// ropeLlama3 is the only RoPE scaling the runtime implements.
const ropeLlama3 = "llama3"

// llama3RopeFactors returns the divisor Llama-3.1 RoPE scaling applies to
// each of the headDim/2 frequencies, as llama.cpp's converter stores them in
// rope_freqs.weight.
func llama3RopeFactors(headDim int, theta float64, s *model.RopeScaling) []float32 {
	orig := float64(s.OriginalMaxPosition)
	lowWavelen, highWavelen := orig/s.LowFreqFactor, orig/s.HighFreqFactor
	out := make([]float32, headDim/2)
	for i := range out {
		wavelen := 2 * math.Pi * math.Pow(theta, float64(2*i)/float64(headDim))
		switch {
		case wavelen < highWavelen:
			out[i] = 1
		case wavelen > lowWavelen:
			out[i] = float32(s.Factor)
		default:
			smooth := (orig/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
			out[i] = float32(1 / ((1-smooth)/s.Factor + smooth))
		}
	}
	return out
}

// checkRopeScaling rejects parameters llama3RopeFactors cannot use.
func checkRopeScaling(s *model.RopeScaling) error {
	if s.Type != ropeLlama3 {
		return fmt.Errorf("rope scaling type %q is not supported (want %q)", s.Type, ropeLlama3)
	}
	if !(s.Factor > 0) || !(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor) || s.OriginalMaxPosition <= 0 {
		return fmt.Errorf("rope scaling %+v: want positive factors, high_freq_factor > low_freq_factor and a positive original context", *s)
	}
	return nil
}

// inferRopeScaling recognises a rope_freqs tensor written by llama.cpp's
// converter, which keeps no scaling parameters in the metadata. It tries the
// parameters of Llama-3.1 and 3.2 (low 1, high 4, original context 8192),
// with the factor read off the largest divisor; nil means no scaling.
func inferRopeScaling(freqs []float32, headDim int, theta float64) (*model.RopeScaling, error) {
	var factor float32
	for _, f := range freqs {
		factor = max(factor, f)
	}
	if factor == 1 {
		return nil, nil
	}
	s := &model.RopeScaling{Type: ropeLlama3, Factor: f32ToF64(factor), LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}
	if !(factor > 1) {
		return nil, fmt.Errorf("%s: largest factor %g, want at least 1", ggufRopeFreqs, factor)
	}
	for i, want := range llama3RopeFactors(headDim, theta, s) {
		if math.Abs(float64(freqs[i]-want)) > 1e-4*float64(want) {
			return nil, fmt.Errorf("%s: factor %d is %g, Llama-3 scaling %+v gives %g; other rope scalings are not supported",
				ggufRopeFreqs, i, freqs[i], *s, want)
		}
	}
	return s, nil
}

// f32ToF64 widens a float32 metadata value to the float64 with the same
// shortest decimal form, so 1e-5 stored as f32 loads as 1e-5 exactly.
func f32ToF64(f float32) float64 {
	x := float64(f)
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return x
	}
	s := strconv.FormatFloat(x, 'g', -1, 32)
	y, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return x
	}
	return y
}
