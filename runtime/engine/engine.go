// Package engine is the Llama forward pass, written once against
// backend.Backend. Read it beside the paper's equations: each step of
// forward is one backend op.
package engine

import (
	"errors"
	"fmt"
	"math"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Model is a checkpoint uploaded to a backend.
type Model struct {
	Config  model.Config
	Backend backend.Backend
	embed   backend.Weight
	outNorm backend.Weight
	output  backend.Weight // the embedding when tied
	layers  []layer
	freqs   []float32 // RoPE frequency of each pair, scaling applied
	// sparse: projections were uploaded for SparseMatMul; sites are their
	// budgets in plan order (nil: every projection dense).
	sparse bool
	sites  []backend.Site
}

// Options control Load.
type Options struct {
	// Sparse uploads the projections input-channel-major so that a plan
	// can be applied (SetPlan). Without it the model runs dense only.
	Sparse bool
	// Uploaded, if set, hears the bytes of each tensor once it is on the
	// backend (m.ByteCount() in all), for a progress bar.
	Uploaded func(bytes int64)
}

type layer struct {
	attnNorm, ffnNorm backend.Weight
	w                 [model.NumProjections]backend.Weight
	in                [model.NumProjections]int // each projection's input width
}

// Load uploads every tensor of m to b. m must stay open while the Model is
// used (a CPU backend reads the memory-mapped file directly).
func Load(b backend.Backend, m *model.Model) (*Model, error) {
	return LoadWith(b, m, Options{})
}

// LoadWith is Load with options.
func LoadWith(b backend.Backend, m *model.Model, o Options) (*Model, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	cfg := m.Config
	e := &Model{Config: cfg, Backend: b, layers: make([]layer, cfg.NLayers), freqs: RopeFreqs(&cfg), sparse: o.Sparse}
	up := func(name string) (backend.Weight, error) {
		upload := b.Upload
		if o.Sparse && len(m.Tensors[name].Shape) == 2 && name != model.NameEmbed && name != model.NameOutput {
			upload = b.UploadSparse
		}
		w, err := upload(m.Tensors[name])
		if err != nil {
			return nil, fmt.Errorf("load %s on %s: %w", m.Source, b.Name(), err)
		}
		if o.Uploaded != nil {
			o.Uploaded(int64(len(m.Tensors[name].Data)))
		}
		return w, nil
	}
	var err error
	if e.embed, err = up(model.NameEmbed); err != nil {
		return nil, err
	}
	if e.outNorm, err = up(model.NameOutputNorm); err != nil {
		return nil, err
	}
	e.output = e.embed
	if !cfg.TiedOutput {
		if e.output, err = up(model.NameOutput); err != nil {
			return nil, err
		}
	}
	for l := range e.layers {
		L := &e.layers[l]
		if L.attnNorm, err = up(model.AttnNormName(l)); err != nil {
			return nil, err
		}
		if L.ffnNorm, err = up(model.FFNNormName(l)); err != nil {
			return nil, err
		}
		for p := range model.NumProjections {
			if L.w[p], err = up(model.ProjName(l, p)); err != nil {
				return nil, err
			}
			L.in[p] = L.w[p].Shape()[1]
		}
	}
	return e, nil
}

// RopeFreqs returns the rotation frequency of each of the head_dim/2 pairs:
// theta^(-2i/head_dim), with Llama-3.1's frequency-dependent scaling when
// the config has it.
func RopeFreqs(c *model.Config) []float32 {
	half := c.HeadDim / 2
	f := make([]float32, half)
	for i := range f {
		freq := math.Pow(c.RopeTheta, -float64(2*i)/float64(c.HeadDim))
		if s := c.RopeScale; s != nil && s.Factor > 0 {
			orig := float64(s.OriginalMaxPosition)
			lowWave, highWave := orig/s.LowFreqFactor, orig/s.HighFreqFactor
			wave := 2 * math.Pi / freq
			switch {
			case wave < highWave:
			case wave > lowWave:
				freq /= s.Factor
			default:
				smooth := (orig/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				freq = (1-smooth)*freq/s.Factor + smooth*freq
			}
		}
		f[i] = float32(freq)
	}
	return f
}

// State is one sequence's KV cache and scratch buffers.
type State struct {
	m       *Model
	Pos     int // tokens already in the cache
	ctx     int
	maxRows int
	kc, vc  []backend.Buffer
	// scratch, each maxRows rows
	x, xb, q, k, v, att, xb2, hb, hb2, logits backend.Buffer
	// SparseFrom is the first position whose activations the plan
	// sparsifies; earlier positions (a prompt, the first half of a
	// perplexity window) run dense.
	SparseFrom int
	// Observe, if set, sees a host copy of the input of every projection
	// site before it is used: rows × width values. It is called once per
	// distinct input: for q (whose input k and v share), o, gate (shared
	// with up) and down.
	Observe func(layer int, p model.Projection, x []float32, rows, width int)
	host    []float32
}

// ErrContextFull is returned when a forward pass would pass the context.
var ErrContextFull = errors.New("context window is full")

// NewState allocates a KV cache for ctx positions (0: the model's SeqLen)
// and scratch for prefill chunks of up to maxRows tokens.
func (m *Model) NewState(ctx, maxRows int) *State {
	c := &m.Config
	if ctx <= 0 || ctx > c.SeqLen {
		ctx = c.SeqLen
	}
	maxRows = max(1, min(maxRows, ctx))
	b := m.Backend
	s := &State{m: m, ctx: ctx, maxRows: maxRows}
	for range c.NLayers {
		s.kc = append(s.kc, b.Alloc(ctx*c.KVDim()))
		s.vc = append(s.vc, b.Alloc(ctx*c.KVDim()))
	}
	s.x = b.Alloc(maxRows * c.Dim)
	s.xb = b.Alloc(maxRows * max(c.Dim, c.QDim()))
	s.xb2 = b.Alloc(maxRows * c.Dim)
	s.q = b.Alloc(maxRows * c.QDim())
	s.k = b.Alloc(maxRows * c.KVDim())
	s.v = b.Alloc(maxRows * c.KVDim())
	s.att = b.Alloc(maxRows * c.QDim())
	s.hb = b.Alloc(maxRows * c.HiddenDim)
	s.hb2 = b.Alloc(maxRows * c.HiddenDim)
	s.logits = b.Alloc(maxRows * c.VocabSize)
	return s
}

// Context is the number of positions the cache holds.
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
func (s *State) Logits() backend.Buffer { return s.logits }

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
	st, step := s.m.Backend.(backend.Stepper)
	step = step && s.Observe == nil
	if step {
		st.BeginStep()
	}
	s.forwardWith(1, func(dst backend.Buffer) { ch.EmbedPicked(dst, s.m.embed) })
	s.classify(1, 0)
	if step {
		st.EndStep()
	}
	return nil
}

// run is Forward; with logits nil it reads nothing back.
func (s *State) run(tokens []int, logits []float32, all bool) error {
	c := &s.m.Config
	if s.Pos+len(tokens) > s.ctx {
		return fmt.Errorf("%w: %d tokens at position %d, context %d", ErrContextFull, len(tokens), s.Pos, s.ctx)
	}
	for _, t := range tokens {
		if t < 0 || t >= c.VocabSize {
			return fmt.Errorf("token id %d outside the vocabulary (%d)", t, c.VocabSize)
		}
	}
	for done := 0; done < len(tokens); {
		n := min(s.maxRows, len(tokens)-done)
		if s.Pos < s.SparseFrom {
			n = min(n, s.SparseFrom-s.Pos) // a chunk is all dense or all sparse
		}
		last := done+n == len(tokens)
		// A one-token chunk is a decode step: a Stepper backend may run it
		// as one unit (a CUDA graph). Observe reads activations mid-step.
		st, step := s.m.Backend.(backend.Stepper)
		step = step && n == 1 && (all || last) && s.Observe == nil
		if step {
			st.BeginStep()
		}
		s.forward(tokens[done : done+n])
		if all || last {
			first := n - 1
			if all {
				first = 0
			}
			s.classify(n-first, first)
			if step {
				st.EndStep()
			}
			switch {
			case logits == nil:
			case all:
				s.m.Backend.Read(logits[done*c.VocabSize:(done+n)*c.VocabSize], s.logits, 0)
			default:
				s.m.Backend.Read(logits[:c.VocabSize], s.logits, 0)
			}
		}
		done += n
	}
	return nil
}

// forward runs one chunk of rows tokens through every block, leaving the
// residual stream in s.x and advancing Pos.
func (s *State) forward(tokens []int) {
	s.forwardWith(len(tokens), func(dst backend.Buffer) { s.m.Backend.Embed(dst, s.m.embed, tokens) })
}

// forwardWith is forward of rows tokens that embed writes into s.x.
func (s *State) forwardWith(rows int, embed func(dst backend.Buffer)) {
	m, b, c := s.m, s.m.Backend, &s.m.Config
	pos := s.Pos
	eps := float32(c.NormEps)
	embed(s.x)
	for l := range m.layers {
		L := &m.layers[l]
		// attention: x += Wo · attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x))
		b.RMSNorm(s.xb, s.x, L.attnNorm, rows, eps)
		s.observe(l, model.ProjQ, s.xb, rows, c.Dim)
		s.linear(l, s.xb, rows, out{s.q, model.ProjQ, false}, out{s.k, model.ProjK, false}, out{s.v, model.ProjV, false})
		b.RoPECache(s.q, s.k, s.v, s.kc[l], s.vc[l], rows, c.NHeads, c.NKVHeads, c.HeadDim, pos, m.freqs)
		b.Attention(s.att, s.q, s.kc[l], s.vc[l], rows, c.NHeads, c.NKVHeads, c.HeadDim, pos)
		s.observe(l, model.ProjO, s.att, rows, c.QDim())
		s.linear(l, s.att, rows, out{s.x, model.ProjO, true})
		// MLP: x += Wdown · (silu(Wgate·n(x)) ⊙ Wup·n(x))
		b.RMSNorm(s.xb, s.x, L.ffnNorm, rows, eps)
		s.observe(l, model.ProjGate, s.xb, rows, c.Dim)
		s.linear(l, s.xb, rows, out{s.hb, model.ProjGate, false}, out{s.hb2, model.ProjUp, false})
		b.SwiGLU(s.hb, s.hb2, rows*c.HiddenDim)
		s.observe(l, model.ProjDown, s.hb, rows, c.HiddenDim)
		s.linear(l, s.hb, rows, out{s.x, model.ProjDown, true})
	}
	s.Pos += rows
}

// out names one projection of a group and its destination; add makes the
// product add to dst (the residual stream) instead of overwriting it.
type out struct {
	dst backend.Buffer
	p   model.Projection
	add bool
}

// linear runs the projections of layer l that share the input x (q/k/v,
// gate/up, or one alone) on rows rows: sparse by the plan at positions from
// SparseFrom on, dense otherwise.
func (s *State) linear(l int, x backend.Buffer, rows int, outs ...out) {
	s.m.project(l, x, rows, s.m.sites != nil && s.Pos >= s.SparseFrom, outs...)
}

// project runs one group of projections of layer l as one backend call,
// with the plan's budgets when sparse, dense otherwise.
func (m *Model) project(l int, x backend.Buffer, rows int, sparse bool, outs ...out) {
	ps := make([]backend.Proj, len(outs))
	for i, o := range outs {
		ly := &m.layers[l]
		ps[i] = backend.Proj{Dst: o.dst, W: ly.w[o.p], Add: o.add}
		if !m.sparse {
			continue
		}
		if sparse {
			ps[i].Site = m.sites[l*int(model.NumProjections)+int(o.p)]
		} else {
			ps[i].Site = backend.Site{ID: -1, TopK: true, K: ly.in[o.p]} // dense, not counted
		}
	}
	if m.sparse {
		m.Backend.SparseMatMuls(x, rows, ps)
	} else {
		m.Backend.MatMuls(x, rows, ps)
	}
}

func (s *State) observe(l int, p model.Projection, x backend.Buffer, rows, width int) {
	if s.Observe == nil {
		return
	}
	if len(s.host) < rows*width {
		s.host = make([]float32, rows*width)
	}
	h := s.host[:rows*width]
	s.m.Backend.Read(h, x, 0)
	s.Observe(l, p, h, rows, width)
}

// classify puts the logits of rows rows starting at row first of s.x into
// s.logits.
func (s *State) classify(rows, first int) {
	m, b, c := s.m, s.m.Backend, &s.m.Config
	src := s.x
	if first > 0 {
		b.Copy(s.xb2, 0, s.x, first*c.Dim, rows*c.Dim)
		src = s.xb2
	}
	b.RMSNorm(s.xb, src, m.outNorm, rows, float32(c.NormEps))
	b.MatMul(s.logits, m.output, s.xb, rows)
}

// Vocab is the width of a logits row.
func (s *State) Vocab() int { return s.m.Config.VocabSize }

// MaxRows is the longest chunk one pass of Forward runs.
func (s *State) MaxRows() int { return s.maxRows }

// Model is the model this state runs.
func (s *State) Model() *Model { return s.m }
