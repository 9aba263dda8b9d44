package engine

import (
	"fmt"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Batch runs one decode step for several sequences at once: the
// projections (the weight reads that dominate decode) run once over all
// rows, attention runs per sequence against its own cache. A server uses
// it so that concurrent requests share each pass over the weights.
type Batch struct {
	m                                         *Model
	max                                       int
	x, xb, q, k, v, att, xb2, hb, hb2, logits backend.Buffer
}

// NewBatch allocates scratch for up to maxSeqs sequences a step.
func (m *Model) NewBatch(maxSeqs int) *Batch {
	c, b := &m.Config, m.Backend
	n := max(1, maxSeqs)
	return &Batch{m: m, max: n,
		x: b.Alloc(n * c.Dim), xb: b.Alloc(n * max(c.Dim, c.QDim())), xb2: b.Alloc(n * c.Dim),
		q: b.Alloc(n * c.QDim()), k: b.Alloc(n * c.KVDim()), v: b.Alloc(n * c.KVDim()), att: b.Alloc(n * c.QDim()),
		hb: b.Alloc(n * c.HiddenDim), hb2: b.Alloc(n * c.HiddenDim), logits: b.Alloc(n * c.VocabSize)}
}

// Step feeds tokens[i] to states[i] at its current position, advances
// every state, and writes the logits of sequence i to logits[i·vocab:]
// (logits nil: they stay on the backend, Logits, for a backend.Picker).
// Each state must belong to the batch's model and have room for one more
// token; a sequence is sparse if its position is at or past its SparseFrom.
// Rows share one sparse/dense decision per projection: if any sequence
// of the batch is still dense, the whole step runs dense (Step reports
// that as dense=true so a server can count it).
func (bt *Batch) Step(states []*State, tokens []int, logits []float32) (dense bool, err error) {
	m, b, c := bt.m, bt.m.Backend, &bt.m.Config
	n := len(states)
	switch {
	case n == 0:
		return false, nil
	case n > bt.max:
		return false, fmt.Errorf("batch of %d sequences, room for %d", n, bt.max)
	case len(tokens) != n:
		return false, fmt.Errorf("%d tokens for %d sequences", len(tokens), n)
	case logits != nil && len(logits) < n*c.VocabSize:
		return false, fmt.Errorf("logits buffer holds %d values, need %d", len(logits), n*c.VocabSize)
	}
	sparse := m.sites != nil
	for i, s := range states {
		if s.m != m {
			return false, fmt.Errorf("sequence %d belongs to another model", i)
		}
		if s.Pos >= s.ctx {
			return false, fmt.Errorf("sequence %d: %w", i, ErrContextFull)
		}
		if tokens[i] < 0 || tokens[i] >= c.VocabSize {
			return false, fmt.Errorf("sequence %d: token id %d outside the vocabulary (%d)", i, tokens[i], c.VocabSize)
		}
		if s.Pos < s.SparseFrom {
			sparse = false
		}
	}
	dense = m.sites != nil && !sparse
	eps := float32(c.NormEps)
	kvDim, qDim := c.KVDim(), c.QDim()
	linear := func(l int, x backend.Buffer, outs ...out) { m.project(l, x, n, sparse, outs...) }
	st, step := b.(backend.Stepper)
	if step {
		st.BeginStep()
	}
	b.Embed(bt.x, m.embed, tokens)
	for l := range m.layers {
		L := &m.layers[l]
		b.RMSNorm(bt.xb, bt.x, L.attnNorm, n, eps)
		linear(l, bt.xb, out{bt.q, model.ProjQ, false}, out{bt.k, model.ProjK, false}, out{bt.v, model.ProjV, false})
		for i, s := range states {
			// Each sequence's row goes through its own state's scratch:
			// RoPE at its position, into its cache, attention over it.
			// (Copies at fixed offsets; the position goes only to RoPECache
			// and Attention, so a CUDA-graph step stays the same.)
			b.Copy(s.q, 0, bt.q, i*qDim, qDim)
			b.Copy(s.k, 0, bt.k, i*kvDim, kvDim)
			b.Copy(s.v, 0, bt.v, i*kvDim, kvDim)
			b.RoPECache(s.q, s.k, s.v, s.kc[l], s.vc[l], 1, c.NHeads, c.NKVHeads, c.HeadDim, s.Pos, m.freqs)
			b.Attention(s.att, s.q, s.kc[l], s.vc[l], 1, c.NHeads, c.NKVHeads, c.HeadDim, s.Pos)
			b.Copy(bt.att, i*qDim, s.att, 0, qDim)
		}
		linear(l, bt.att, out{bt.x, model.ProjO, true})
		b.RMSNorm(bt.xb, bt.x, L.ffnNorm, n, eps)
		linear(l, bt.xb, out{bt.hb, model.ProjGate, false}, out{bt.hb2, model.ProjUp, false})
		b.SwiGLU(bt.hb, bt.hb2, n*c.HiddenDim)
		linear(l, bt.hb, out{bt.x, model.ProjDown, true})
	}
	for _, s := range states {
		s.Pos++
	}
	b.RMSNorm(bt.xb, bt.x, m.outNorm, n, eps)
	b.MatMul(bt.logits, m.output, bt.xb, n)
	if step {
		st.EndStep()
	}
	if logits != nil {
		b.Read(logits[:n*c.VocabSize], bt.logits, 0)
	}
	return dense, nil
}

// Logits is the backend buffer whose row i holds the logits of sequence i
// of the last Step.
func (bt *Batch) Logits() backend.Buffer { return bt.logits }
