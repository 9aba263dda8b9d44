// Package attend is causal multi-head attention over a KV cache on the
// CPU: the one part of a decode step that grows with the context.
//
// Conventions: q is rows × nHeads × headDim (row r is the token at position
// pos0+r); the caches kc and vc hold positions 0 … pos0+rows−1, each a row
// of nKVHeads × headDim; query head h reads KV head h/(nHeads/nKVHeads)
// (grouped-query attention). Row r attends to positions 0 … pos0+r:
//
//	out[r,h] = Σ_t softmax_t(q[r,h]·k[t,h']/√headDim) · v[t,h']
//
// All arithmetic is float32. The work is split into (row, head) jobs, each
// independent; Heads computes a range of them on the calling goroutine.
package attend

import "fmt"

// Shape is the geometry of one attention call.
type Shape struct {
	Rows, NHeads, NKVHeads, HeadDim, Pos0 int
}

// Jobs is the number of independent (row, head) jobs.
func (s Shape) Jobs() int { return s.Rows * s.NHeads }

// Scratch is the number of float32 values Heads needs as scratch: one
// score per position.
func (s Shape) Scratch() int { return s.Pos0 + s.Rows }

// Heads computes jobs [lo, hi) of the call (job = r·NHeads + h) into out,
// using scratch (at least s.Scratch() values). It panics on shapes that
// do not fit the buffers, a programming error.
func Heads(out, q, kc, vc, scratch []float32, s Shape, lo, hi int) {
	s.check(out, q, kc, vc, scratch, lo, hi)
	if lo < hi {
		heads(out, q, kc, vc, scratch, s, lo, hi)
	}
}

func (s Shape) check(out, q, kc, vc, scratch []float32, lo, hi int) {
	qDim, kvDim := s.NHeads*s.HeadDim, s.NKVHeads*s.HeadDim
	switch {
	case s.Rows < 0 || s.Pos0 < 0 || s.HeadDim <= 0 || s.NKVHeads <= 0 || s.NHeads%s.NKVHeads != 0:
		panic(fmt.Sprintf("attend: bad shape %+v", s))
	case lo < 0 || hi > s.Jobs() || lo > hi:
		panic(fmt.Sprintf("attend: jobs [%d,%d) of %d", lo, hi, s.Jobs()))
	case len(q) < s.Rows*qDim || len(out) < s.Rows*qDim:
		panic(fmt.Sprintf("attend: q or out shorter than %d×%d", s.Rows, qDim))
	case len(kc) < (s.Pos0+s.Rows)*kvDim || len(vc) < (s.Pos0+s.Rows)*kvDim:
		panic(fmt.Sprintf("attend: caches shorter than %d positions of %d", s.Pos0+s.Rows, kvDim))
	case len(scratch) < s.Scratch():
		panic(fmt.Sprintf("attend: scratch has %d values, want %d", len(scratch), s.Scratch()))
	}
}
