package engine

import (
	"errors"
	"fmt"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// State is one sequence: its KV cache, its position, the budgets it runs
// under, and scratch for prefill chunks of up to MaxRows tokens. The cache
// grows with use: it starts with room for kvChunk positions (or the
// context, if less) and doubles when a pass needs more, up to the context,
// so a state costs the memory of the positions it has reached, not of the
// whole context.
type State struct {
	m       *Model
	Pos     int // tokens already in the cache
	ctx     int // positions the cache may grow to
	maxRows int
	kvCap   int // positions the cache holds now
	// kc, vc: per layer, kvCap × kv_dim keys (RoPE applied) and values.
	kc, vc []backend.Buffer
	sc     scratch // maxRows rows
	// Budgets are the activation budgets the sequence runs under at
	// positions from SparseFrom on (Model.Budgets; nil: dense). Set them
	// between passes; the table itself never changes.
	Budgets *backend.Budgets
	// SparseFrom is the first position whose activations the budgets
	// sparsify; earlier positions (a prompt, the first half of a
	// perplexity window) run dense.
	SparseFrom int
	// Observe, if set, sees a host copy of the input of every projection
	// site before it is used: rows × width values. It is called once per
	// distinct input: for q (whose input k and v share), o, gate (shared
	// with up) and down.
	Observe func(layer int, p model.Projection, x []float32, rows, width int)
	host    []float32 // Observe's copy of one input: rows × width
	self    [1]*State // the state as the one sequence of its passes
	p       pass      // the pass of the next chunk (pass), reused
	seg     [1]segment
}

// ErrContextFull is returned when a forward pass would pass the context.
var ErrContextFull = errors.New("context window is full")

// kvChunk is the positions a new cache has room for.
const kvChunk = 256

// NewState makes a state of context ctx (0, or more than the model's
// SeqLen: the model's) with scratch for prefill chunks of up to maxRows
// tokens. Its cache starts small and grows as the sequence does.
func (m *Model) NewState(ctx, maxRows int) *State {
	c := &m.Config
	if ctx <= 0 || ctx > c.SeqLen {
		ctx = c.SeqLen
	}
	maxRows = max(1, min(maxRows, ctx))
	s := &State{m: m, ctx: ctx, maxRows: maxRows, sc: newScratch(m.Backend, c, maxRows)}
	s.self[0] = s
	s.kc, s.vc = make([]backend.Buffer, c.NLayers), make([]backend.Buffer, c.NLayers)
	s.grow(min(ctx, kvChunk))
	return s
}

// grow makes the cache hold at least n (≤ ctx) positions: new buffers of
// twice the room (at least n, at most ctx) take the Pos positions held so
// far, and the old ones are freed.
func (s *State) grow(n int) {
	if n <= s.kvCap {
		return
	}
	b, kvDim := s.m.Backend, s.m.Config.KVDim()
	room := min(s.ctx, max(n, 2*s.kvCap))
	for l := range s.kc {
		for _, c := range []*backend.Buffer{&s.kc[l], &s.vc[l]} {
			fresh := b.Alloc(room * kvDim)
			if *c != nil {
				if s.Pos > 0 {
					b.Copy(fresh, 0, *c, 0, s.Pos*kvDim)
				}
				b.Free(*c)
			}
			*c = fresh
		}
	}
	s.kvCap = room
}

// StateBytes is the backend memory of a state whose cache has room for
// positions positions, with scratch for maxRows rows: what a server
// reserves for a sequence that may reach that length.
func (m *Model) StateBytes(positions, maxRows int) int64 {
	c := &m.Config
	kv := int64(2*c.NLayers) * int64(positions) * int64(c.KVDim())
	perRow := int64(2*c.Dim + max(c.Dim, c.QDim()) + 2*c.QDim() + 2*c.KVDim() + 2*c.HiddenDim + c.VocabSize) // scratch
	return 4 * (kv + int64(max(1, maxRows))*perRow)
}

// Bytes is the backend memory the state holds now (StateBytes at the
// cache's present room).
func (s *State) Bytes() int64 { return s.m.StateBytes(s.kvCap, s.maxRows) }

// Close frees the state's memory; the state may not be used after.
func (s *State) Close() {
	b := s.m.Backend
	for l := range s.kc {
		b.Free(s.kc[l])
		b.Free(s.vc[l])
	}
	s.sc.free(b)
	s.kc, s.vc, s.kvCap = nil, nil, 0
}

// Context is the number of positions the sequence may reach.
func (s *State) Context() int { return s.ctx }

// Reset empties the cache (the buffers are reused).
func (s *State) Reset() { s.Pos = 0 }

// Forward runs tokens through the model at positions Pos, Pos+1, … and
// advances Pos. If all is true, logits gets len(tokens) × vocab values (one
// row per token); otherwise it gets the vocab logits of the last token.
func (s *State) Forward(tokens []int, logits []float32, all bool) error {
	want := s.m.Config.VocabSize
	if all {
		want *= len(tokens)
	}
	if len(logits) < want {
		return fmt.Errorf("logits buffer holds %d values, need %d", len(logits), want)
	}
	return s.run(tokens, logits, all)
}

// Decode runs one token at position Pos as a decode step and advances Pos,
// leaving its logits on the backend (Logits) instead of reading them: for a
// backend.Picker to choose the next token there.
func (s *State) Decode(token int) error { return s.run([]int{token}, nil, false) }

// Logits is the backend buffer whose first VocabSize values are the
// logits of the last token Forward or Decode ran.
func (s *State) Logits() backend.Buffer { return s.sc.logits }

// DecodePicked is Decode of the token the backend picked last
// (backend.Chainer.PickNext), which it reads on the device: the step can be
// queued before the host knows the token.
func (s *State) DecodePicked() error {
	ch, ok := s.m.Backend.(backend.Chainer)
	if !ok {
		return fmt.Errorf("decode: the %s backend cannot embed a token it picked", s.m.Backend.Name())
	}
	if s.Pos+1 > s.ctx {
		return fmt.Errorf("%w: 1 token at position %d, context %d", ErrContextFull, s.Pos, s.ctx)
	}
	if err := s.m.checkBudgets(s.Budgets); err != nil {
		return err
	}
	s.grow(s.Pos + 1)
	st, step := s.m.Backend.(backend.Stepper)
	step = step && s.Observe == nil
	if step {
		st.BeginStep()
	}
	s.m.forward(s.pass(1), func(dst backend.Buffer) { ch.EmbedPicked(dst, s.m.embed) })
	s.m.classify(&s.sc, 1, 0)
	if step {
		st.EndStep()
	}
	return s.m.deviceErr()
}

// run is Forward; with logits nil it reads nothing back.
func (s *State) run(tokens []int, logits []float32, all bool) error {
	m, c := s.m, &s.m.Config
	if s.Pos+len(tokens) > s.ctx {
		return fmt.Errorf("%w: %d tokens at position %d, context %d", ErrContextFull, len(tokens), s.Pos, s.ctx)
	}
	for _, t := range tokens {
		if t < 0 || t >= c.VocabSize {
			return fmt.Errorf("token id %d outside the vocabulary (%d)", t, c.VocabSize)
		}
	}
	if err := m.checkBudgets(s.Budgets); err != nil {
		return err
	}
	s.grow(s.Pos + len(tokens))
	for done := 0; done < len(tokens); {
		n := min(s.maxRows, len(tokens)-done)
		if s.Pos < s.SparseFrom {
			n = min(n, s.SparseFrom-s.Pos) // a chunk is all dense or all sparse
		}
		last := done+n == len(tokens)
		// A one-token chunk is a decode step: a Stepper backend may run it
		// as one unit (a CUDA graph). Observe reads activations mid-step.
		st, step := m.Backend.(backend.Stepper)
		step = step && n == 1 && (all || last) && s.Observe == nil
		if step {
			st.BeginStep()
		}
		chunk := tokens[done : done+n]
		m.forward(s.pass(n), func(dst backend.Buffer) { m.Backend.Embed(dst, m.embed, chunk) })
		if all || last {
			first := n - 1
			if all {
				first = 0
			}
			m.classify(&s.sc, n-first, first)
			if step {
				st.EndStep()
			}
			switch {
			case logits == nil:
			case all:
				m.Backend.Read(logits[done*c.VocabSize:(done+n)*c.VocabSize], s.sc.logits, 0)
			default:
				m.Backend.Read(logits[:c.VocabSize], s.sc.logits, 0)
			}
		}
		done += n
	}
	return m.deviceErr()
}

// pass is the state's next rows tokens as one pass of the block, under
// its budgets if the chunk lies at or past SparseFrom.
func (s *State) pass(rows int) *pass {
	s.seg[0] = segment{n: rows, bud: s.budgetsNow()}
	s.p = pass{m: s.m, sc: &s.sc, seqs: s.self[:], per: rows, segs: s.seg[:]}
	return &s.p
}

// budgetsNow is the budgets the next token runs under: nil before
// SparseFrom.
func (s *State) budgetsNow() *backend.Budgets {
	if s.Pos < s.SparseFrom {
		return nil
	}
	return s.Budgets
}

// Vocab is the width of a logits row.
func (s *State) Vocab() int { return s.m.Config.VocabSize }

// MaxRows is the longest chunk one pass of Forward runs.
func (s *State) MaxRows() int { return s.maxRows }

// Model is the model this state runs.
func (s *State) Model() *Model { return s.m }
