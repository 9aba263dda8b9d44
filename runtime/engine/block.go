package engine

import (
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// scratch is the activations of one pass of up to rows tokens: each
// buffer holds rows rows of the width given (as llama2.c's RunState).
type scratch struct {
	x      backend.Buffer // dim: the residual stream
	xb     backend.Buffer // max(dim, q_dim): x normed, the input of q/k/v, gate/up and the classifier
	xb2    backend.Buffer // dim: the rows of x that are classified, when not all are
	q      backend.Buffer // q_dim = heads·head_dim: queries
	k, v   backend.Buffer // kv_dim = kv_heads·head_dim: the pass's keys and values
	att    backend.Buffer // q_dim: attention's output, the input of o
	hb     backend.Buffer // hidden: gate, then silu(gate) ⊙ up, the input of down
	hb2    backend.Buffer // hidden: up
	logits backend.Buffer // vocab
}

func newScratch(b backend.Backend, c *model.Config, rows int) scratch {
	return scratch{
		x: b.Alloc(rows * c.Dim), xb: b.Alloc(rows * max(c.Dim, c.QDim())), xb2: b.Alloc(rows * c.Dim),
		q: b.Alloc(rows * c.QDim()), k: b.Alloc(rows * c.KVDim()), v: b.Alloc(rows * c.KVDim()),
		att: b.Alloc(rows * c.QDim()), hb: b.Alloc(rows * c.HiddenDim), hb2: b.Alloc(rows * c.HiddenDim),
		logits: b.Alloc(rows * c.VocabSize),
	}
}

// free frees the scratch buffers.
func (sc *scratch) free(b backend.Backend) {
	for _, x := range []backend.Buffer{sc.x, sc.xb, sc.xb2, sc.q, sc.k, sc.v, sc.att, sc.hb, sc.hb2, sc.logits} {
		b.Free(x)
	}
}

// pass is one forward pass of len(seqs)·per rows in sc: sequence i owns
// rows i·per … (i+1)·per−1, at its positions Pos, Pos+1, …. A prompt chunk
// is one sequence of many rows; a batch step is many sequences of one row.
// segs cut the rows into runs under one budgets each (nil: dense).
type pass struct {
	m    *Model
	sc   *scratch
	seqs []*State
	per  int
	segs []segment
}

// segment is rows lo … lo+n−1 of a pass, under bud (nil: dense).
type segment struct {
	lo, n int
	bud   *backend.Budgets
}

func (p *pass) rows() int { return len(p.seqs) * p.per }

// forward runs the pass through every block, embed having written the
// embeddings into sc.x, and advances each sequence's Pos. It leaves the
// residual stream in sc.x.
func (m *Model) forward(p *pass, embed func(dst backend.Buffer)) {
	b, c, sc := m.Backend, &m.Config, p.sc
	rows, eps := p.rows(), float32(c.NormEps)
	embed(sc.x)
	for l := range m.layers {
		L := &m.layers[l]
		// attention: x += Wo · attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x))
		b.RMSNorm(sc.xb, sc.x, L.attnNorm, rows, eps)
		p.observe(l, model.ProjQ, sc.xb, c.Dim)
		p.linear(l, sc.xb, out{sc.q, model.ProjQ, false}, out{sc.k, model.ProjK, false}, out{sc.v, model.ProjV, false})
		p.attend(l)
		p.observe(l, model.ProjO, sc.att, c.QDim())
		p.linear(l, sc.att, out{sc.x, model.ProjO, true})
		// MLP: x += Wdown · (silu(Wgate·n(x)) ⊙ Wup·n(x))
		b.RMSNorm(sc.xb, sc.x, L.ffnNorm, rows, eps)
		p.observe(l, model.ProjGate, sc.xb, c.Dim)
		p.linear(l, sc.xb, out{sc.hb, model.ProjGate, false}, out{sc.hb2, model.ProjUp, false})
		b.SwiGLU(sc.hb, sc.hb2, rows*c.HiddenDim)
		p.observe(l, model.ProjDown, sc.hb, c.HiddenDim)
		p.linear(l, sc.hb, out{sc.x, model.ProjDown, true})
	}
	for _, s := range p.seqs {
		s.Pos += p.per
	}
}

// attend is layer l's attention: each sequence's rows of q and k get RoPE
// at its positions, k and v go into its cache, and its queries attend
// over that cache, into sc.att. One sequence works on the pass's buffers
// in place. Several go through their own states' scratch, by copies at
// fixed offsets: the positions reach only RoPECache and Attention, so a
// CUDA-graph step stays the same from one step to the next.
func (p *pass) attend(l int) {
	m, sc := p.m, p.sc
	b, c := m.Backend, &m.Config
	if len(p.seqs) == 1 {
		s := p.seqs[0]
		b.RoPECache(sc.q, sc.k, sc.v, s.kc[l], s.vc[l], p.per, c.NHeads, c.NKVHeads, c.HeadDim, s.Pos, m.freqs)
		b.Attention(sc.att, sc.q, s.kc[l], s.vc[l], p.per, c.NHeads, c.NKVHeads, c.HeadDim, s.Pos)
		return
	}
	qDim, kvDim := p.per*c.QDim(), p.per*c.KVDim()
	for i, s := range p.seqs {
		own := &s.sc
		b.Copy(own.q, 0, sc.q, i*qDim, qDim)
		b.Copy(own.k, 0, sc.k, i*kvDim, kvDim)
		b.Copy(own.v, 0, sc.v, i*kvDim, kvDim)
		b.RoPECache(own.q, own.k, own.v, s.kc[l], s.vc[l], p.per, c.NHeads, c.NKVHeads, c.HeadDim, s.Pos, m.freqs)
		b.Attention(own.att, own.q, s.kc[l], s.vc[l], p.per, c.NHeads, c.NKVHeads, c.HeadDim, s.Pos)
		b.Copy(sc.att, i*qDim, own.att, 0, qDim)
	}
}

// out names one projection of a group and its destination; add makes the
// product add to dst (the residual stream) instead of overwriting it.
type out struct {
	dst backend.Buffer
	p   model.Projection
	add bool
}

// linear runs the projections of layer l that share the input x (q/k/v,
// gate/up, or one alone): one backend call for each segment of the pass,
// under its budgets, dense where it has none.
func (p *pass) linear(l int, x backend.Buffer, outs ...out) {
	m := p.m
	L := &m.layers[l]
	for _, g := range p.segs {
		ps := make([]backend.Proj, len(outs))
		xs := p.rowsOf(g, x, L.in[outs[0].p])
		for i, o := range outs {
			ps[i] = backend.Proj{Dst: p.rowsOf(g, o.dst, L.out[o.p]), W: L.w[o.p], Add: o.add}
			switch {
			case !m.sparse:
			case g.bud != nil:
				ps[i].Budget, ps[i].Table = g.bud.Sites[l*int(model.NumProjections)+int(o.p)], g.bud
			default:
				ps[i].Budget = backend.Budget{ID: -1, TopK: true, K: L.in[o.p]} // dense, not counted
			}
		}
		if m.sparse {
			m.Backend.SparseMatMuls(xs, g.n, ps)
		} else {
			m.Backend.MatMuls(xs, g.n, ps)
		}
	}
}

// rowsOf is segment g's rows of buf (rows of width values): buf itself
// when the pass has one segment, else a view.
func (p *pass) rowsOf(g segment, buf backend.Buffer, width int) backend.Buffer {
	if len(p.segs) == 1 {
		return buf
	}
	return p.m.Backend.View(buf, g.lo*width, g.n*width)
}

// observe hands the pass's input x (rows of width values) of projection
// pr of layer l to the sequence's Observe, for a pass of one sequence.
func (p *pass) observe(l int, pr model.Projection, x backend.Buffer, width int) {
	s := p.seqs[0]
	if len(p.seqs) != 1 || s.Observe == nil {
		return
	}
	rows := p.rows()
	if len(s.host) < rows*width {
		s.host = make([]float32, rows*width)
	}
	h := s.host[:rows*width]
	p.m.Backend.Read(h, x, 0)
	s.Observe(l, pr, h, rows, width)
}

// classify puts the logits of rows rows starting at row first of sc.x
// into sc.logits: logits = Wout · n(x).
func (m *Model) classify(sc *scratch, rows, first int) {
	b, c := m.Backend, &m.Config
	src := sc.x
	if first > 0 {
		b.Copy(sc.xb2, 0, sc.x, first*c.Dim, rows*c.Dim)
		src = sc.xb2
	}
	b.RMSNorm(sc.xb, src, m.outNorm, rows, float32(c.NormEps))
	b.MatMul(sc.logits, m.output, sc.xb, rows)
}
