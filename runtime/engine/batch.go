package engine

import (
	"fmt"

	"github.com/acttail/acttail-gpu/runtime/backend"
)

// Batch runs one decode step for several sequences at once: the
// projections (the weight reads that dominate decode) run once over all
// rows, attention runs per sequence against its own cache. A server uses
// it so that concurrent requests share each pass over the weights.
type Batch struct {
	m   *Model
	max int
	sc  scratch // max rows: row i is sequence i of a step
	// segs and p are the last step's runs of rows and pass, reused.
	segs []segment
	p    pass
}

// NewBatch allocates scratch for up to maxSeqs sequences a step.
func (m *Model) NewBatch(maxSeqs int) *Batch {
	n := max(1, maxSeqs)
	return &Batch{m: m, max: n, sc: newScratch(m.Backend, &m.Config, n)}
}

// Step feeds tokens[i] to states[i] at its current position, advances
// every state, and writes the logits of sequence i to logits[i·vocab:]
// (logits nil: they stay on the backend, Logits, for a backend.Picker).
// Each state must belong to the batch's model and have room for one more
// token. Each row runs under its own state's budgets (dense before its
// SparseFrom): the projections run once for each run of consecutive rows
// under one budgets table, so a caller that orders the states by table
// reads the weights once per table.
func (bt *Batch) Step(states []*State, tokens []int, logits []float32) error {
	m, b, c := bt.m, bt.m.Backend, &bt.m.Config
	n := len(states)
	switch {
	case n == 0:
		return nil
	case n > bt.max:
		return fmt.Errorf("batch of %d sequences, room for %d", n, bt.max)
	case len(tokens) != n:
		return fmt.Errorf("%d tokens for %d sequences", len(tokens), n)
	case logits != nil && len(logits) < n*c.VocabSize:
		return fmt.Errorf("logits buffer holds %d values, need %d", len(logits), n*c.VocabSize)
	}
	segs := bt.segs[:0]
	for i, s := range states {
		if s.m != m {
			return fmt.Errorf("sequence %d belongs to another model", i)
		}
		if s.Pos >= s.ctx {
			return fmt.Errorf("sequence %d: %w", i, ErrContextFull)
		}
		if tokens[i] < 0 || tokens[i] >= c.VocabSize {
			return fmt.Errorf("sequence %d: token id %d outside the vocabulary (%d)", i, tokens[i], c.VocabSize)
		}
		if err := m.checkBudgets(s.Budgets); err != nil {
			return fmt.Errorf("sequence %d: %w", i, err)
		}
		s.grow(s.Pos + 1)
		bud := s.budgetsNow()
		if k := len(segs) - 1; k >= 0 && segs[k].bud == bud {
			segs[k].n++
			continue
		}
		segs = append(segs, segment{lo: i, n: 1, bud: bud})
	}
	st, step := b.(backend.Stepper)
	if step {
		st.BeginStep()
	}
	bt.segs = segs
	bt.p = pass{m: m, sc: &bt.sc, seqs: states, per: 1, segs: segs}
	m.forward(&bt.p, func(dst backend.Buffer) { b.Embed(dst, m.embed, tokens) })
	m.classify(&bt.sc, n, 0)
	if step {
		st.EndStep()
	}
	if logits != nil {
		b.Read(logits[:n*c.VocabSize], bt.sc.logits, 0)
	}
	return m.deviceErr()
}

// Logits is the backend buffer whose row i holds the logits of sequence i
// of the last Step.
func (bt *Batch) Logits() backend.Buffer { return bt.sc.logits }
