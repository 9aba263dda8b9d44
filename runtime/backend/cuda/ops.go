package cuda

import (
	"fmt"
	"slices"
	"unsafe"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
)

func mat(w backend.Weight) *Mat { return w.(*Mat) }

// need returns b's device buffer after checking that it holds at least n
// values. The CPU backend panics on a short slice; here a short buffer would
// be a silent out-of-bounds access on the device (or a sticky fault that
// fails every later op), so the ops check on the host first.
func need(op string, b backend.Buffer, n int) *Buf {
	x := buf(b)
	if n < 0 || n > x.n {
		panic(fmt.Sprintf("cuda: %s: buffer of %d values, need %d", op, x.n, n))
	}
	return x
}

// span checks that [off, off+n) lies in a buffer of size values.
func span(op string, size, off, n int) {
	if off < 0 || n < 0 || off > size || n > size-off {
		panic(fmt.Sprintf("cuda: %s: values [%d, %d+%d) outside a buffer of %d", op, off, off, n, size))
	}
}

// Embed implements backend.Backend.
func (b *Backend) Embed(dst backend.Buffer, table backend.Weight, tokens []int) {
	m := mat(table)
	if m.Trans {
		panic("cuda: embed: table was uploaded with UploadSparse")
	}
	d := need("embed", dst, len(tokens)*m.In)
	if len(tokens) == 0 {
		return
	}
	ids := make([]int32, len(tokens))
	for i, t := range tokens {
		if t < 0 || t >= m.Out {
			panic(fmt.Sprintf("cuda: embed: token %d outside the table's %d rows", t, m.Out))
		}
		ids[i] = int32(t)
	}
	b.ensure(scratchTokens, 4*len(ids))
	l := embedLaunch(len(ids), m.In)
	f := b.fn["at_embed"]
	b.dev.Go(func(c *cudadrv.Ctx) error {
		tok := b.scratch[scratchTokens]
		if err := c.CopyHtoD(tok, unsafe.Pointer(&ids[0]), 4*len(ids), b.stream); err != nil {
			return err
		}
		return c.Launch(f, l.grid, l.block, 0, b.stream, d.p, m.p, tok, m.In, int(m.DType))
	})
}

// RMSNorm implements backend.Backend.
func (b *Backend) RMSNorm(dst, x backend.Buffer, w backend.Weight, rows int, eps float32) {
	v := w.(*Vec)
	d, xs := need("rmsnorm", dst, rows*v.n), need("rmsnorm", x, rows*v.n)
	if rows <= 0 { // a zero grid would be launched as one block (Dim3.norm)
		return
	}
	b.launch("at_rmsnorm", normLaunch(rows), d.p, xs.p, v.p, v.n, eps)
}

// MatMul implements backend.Backend.
func (b *Backend) MatMul(dst backend.Buffer, w backend.Weight, x backend.Buffer, rows int) {
	m := mat(w)
	need("matmul", dst, rows*m.Out)
	need("matmul", x, rows*m.In)
	if rows <= 0 {
		return
	}
	if m.Trans {
		b.denseT(dst, m, x, rows)
		return
	}
	sfx, err := suffix(m.DType)
	must(err)
	if rows <= gemvRows {
		b.launch("at_gemv_"+sfx, gemvLaunch(m.Out), buf(dst).p, m.p, buf(x).p, rows, m.Out, m.In, boolInt(vecOK(m.DType, m.In)))
		return
	}
	b.launch("at_gemm_"+sfx, gemmLaunch(rows, m.Out), buf(dst).p, m.p, buf(x).p, rows, m.Out, m.In, 0)
}

// denseT is a dense product with an input-channel-major weight: a gather
// over every input for decode, the GEMM for longer chunks.
func (b *Backend) denseT(dst backend.Buffer, m *Mat, x backend.Buffer, rows int) {
	sfx, err := suffix(m.DType)
	must(err)
	d := buf(dst)
	if rows > gemvRows {
		b.launch("at_gemm_"+sfx, gemmLaunch(rows, m.Out), d.p, m.p, buf(x).p, rows, m.Out, m.In, 1)
		return
	}
	vec := vecOK(m.DType, m.Out)
	l := gatherLaunch(rows, m.Out, m.In, b.info.SMs, vecElems(m.DType, vec))
	f := b.fn["at_gather_"+sfx]
	b.dev.Go(func(c *cudadrv.Ctx) error {
		if err := c.Memset(d.p, 0, 4*rows*m.Out, b.stream); err != nil {
			return err
		}
		return c.Launch(f, l.grid, l.block, 0, b.stream, d.p, m.p, buf(x).p, cudadrv.DevicePtr(0), cudadrv.DevicePtr(0), m.In, m.Out, boolInt(vec))
	})
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// RoPE implements backend.Backend.
func (b *Backend) RoPE(x backend.Buffer, rows, heads, headDim, pos0 int, freqs []float32) {
	need("rope", x, rows*heads*headDim)
	if len(freqs) < headDim/2 {
		panic(fmt.Sprintf("cuda: rope: %d frequencies for head_dim %d", len(freqs), headDim))
	}
	if rows <= 0 || heads*(headDim/2) <= 0 {
		return
	}
	if !slices.Equal(b.freqs, freqs) {
		b.freqs = slices.Clone(freqs)
		f := b.freqs
		must(b.dev.Do(func(c *cudadrv.Ctx) error {
			if b.dFreqs != 0 {
				if err := c.StreamSynchronize(b.stream); err != nil {
					return err
				}
				if err := c.MemFree(b.dFreqs); err != nil {
					return err
				}
			}
			var err error
			if b.dFreqs, err = c.MemAlloc(4 * len(f)); err != nil {
				return err
			}
			return c.CopyHtoD(b.dFreqs, unsafe.Pointer(&f[0]), 4*len(f), b.stream)
		}))
	}
	l, fn, p := ropeLaunch(rows, heads, headDim), b.fn["at_rope"], buf(x).p
	b.dev.Go(func(c *cudadrv.Ctx) error {
		return c.Launch(fn, l.grid, l.block, 0, b.stream, p, b.dFreqs, rows, heads, headDim, pos0)
	})
}

// Copy implements backend.Backend.
func (b *Backend) Copy(dst backend.Buffer, dstOff int, src backend.Buffer, srcOff, n int) {
	span("copy", buf(dst).n, dstOff, n)
	span("copy", buf(src).n, srcOff, n)
	if n == 0 {
		return
	}
	d, s := buf(dst).at(dstOff), buf(src).at(srcOff)
	b.dev.Go(func(c *cudadrv.Ctx) error { return c.CopyDtoD(d, s, 4*n, b.stream) })
}

// Attention implements backend.Backend.
func (b *Backend) Attention(out, q, kc, vc backend.Buffer, rows, nHeads, nKVHeads, headDim, pos0 int) {
	l, err := attentionLaunch(rows, nHeads, nKVHeads, headDim)
	must(err)
	if pos0 < 0 {
		panic(fmt.Sprintf("cuda: attention: position %d", pos0))
	}
	o, qs := need("attention", out, rows*nHeads*headDim), need("attention", q, rows*nHeads*headDim)
	kvn := (pos0 + rows) * nKVHeads * headDim
	ks, vs := need("attention", kc, kvn), need("attention", vc, kvn)
	if rows <= 0 {
		return
	}
	b.launch("at_attention", l, o.p, qs.p, ks.p, vs.p, nHeads, nKVHeads, headDim, pos0)
}

// SwiGLU implements backend.Backend.
func (b *Backend) SwiGLU(gate, up backend.Buffer, n int) {
	g, u := need("swiglu", gate, n), need("swiglu", up, n)
	if n <= 0 {
		return
	}
	b.launch("at_swiglu", strideGrid(n), g.p, u.p, int64(n))
}

// Add implements backend.Backend.
func (b *Backend) Add(dst, x backend.Buffer, n int) {
	d, xs := need("add", dst, n), need("add", x, n)
	if n <= 0 {
		return
	}
	b.launch("at_add", strideGrid(n), d.p, xs.p, int64(n))
}

// Argmax returns the index of the largest of the first n values of logits
// (the lowest on ties), computed on the device.
func (b *Backend) Argmax(logits backend.Buffer, n int) int {
	return b.pick("at_argmax", buf(logits), n)
}

// Sample draws an index from softmax(logits[:n] / temperature) by inverse
// CDF at u in [0, 1), on the device.
func (b *Backend) Sample(logits backend.Buffer, n int, temperature float32, u float32) int {
	return b.pick("at_sample", buf(logits), n, 1/temperature, u)
}

func (b *Backend) pick(kernel string, logits *Buf, n int, extra ...any) int {
	if n <= 0 || n > logits.n {
		panic(fmt.Sprintf("cuda: %s: %d logits in a buffer of %d", kernel, n, logits.n))
	}
	b.ensure(scratchResult, 4)
	var r int32
	f := b.fn[kernel]
	must(b.dev.Do(func(c *cudadrv.Ctx) error {
		res := b.scratch[scratchResult]
		args := append([]any{res, logits.p, n}, extra...)
		if err := c.Launch(f, cudadrv.Dim3{X: 1}, cudadrv.Dim3{X: sampleThreads}, 0, b.stream, args...); err != nil {
			return err
		}
		return c.CopyDtoH(unsafe.Pointer(&r), res, 4, b.stream)
	}))
	return int(r)
}

// LoadSites writes every site's budget into the kernels' constant table at
// once (SparseMatMul otherwise writes each on its first use).
func (b *Backend) LoadSites(sites []backend.Site) error {
	table := packSites(sites)
	for slot := range maxSites - 1 {
		copy(b.mirror[slot][:], table[slot*siteBytes:])
	}
	return b.dev.Do(func(c *cudadrv.Ctx) error {
		return c.CopyHtoD(b.sites, unsafe.Pointer(&table[0]), (maxSites-1)*siteBytes, b.stream)
	})
}

// useSite makes c_sites hold s and returns its slot.
func (b *Backend) useSite(s backend.Site) int {
	slot := siteSlot(s.ID)
	p := packSite(s)
	if b.mirror[slot] != p {
		b.mirror[slot] = p
		dst := b.sites.Add(slot * siteBytes)
		b.dev.Go(func(c *cudadrv.Ctx) error { return c.CopyHtoD(dst, unsafe.Pointer(&p[0]), siteBytes, b.stream) })
	}
	return slot
}

// countStat makes the device counters hold site id.
func (b *Backend) countStat(id int) {
	if id < b.statCap {
		return
	}
	n := max(id+1, 2*b.statCap, 64)
	must(b.dev.Do(func(c *cudadrv.Ctx) error {
		p, err := c.MemAlloc(16 * n)
		if err != nil {
			return err
		}
		if err := c.Memset(p, 0, 16*n, b.stream); err != nil {
			return err
		}
		if old := b.stats; old != 0 {
			if err := c.CopyDtoD(p, old, 16*b.statCap, b.stream); err != nil {
				return err
			}
			if err := c.StreamSynchronize(b.stream); err != nil {
				return err
			}
			if err := c.MemFree(old); err != nil {
				return err
			}
		}
		b.stats = p
		return nil
	}))
	b.statCap = n
}

// SparseMatMul implements backend.Backend. Decode (rows ≤ 8): at_select
// writes each token's kept indices and zeroes dst, the gather adds the kept
// rows. Longer chunks: at_select writes the masked input and the GEMM runs
// on the transposed weight (the zeros cost flops, not correctness).
func (b *Backend) SparseMatMul(dst backend.Buffer, w backend.Weight, x backend.Buffer, rows int, s backend.Site) {
	m := mat(w)
	if !m.Trans {
		panic("cuda: sparse matmul: weight was not uploaded with UploadSparse")
	}
	need("sparse matmul", dst, rows*m.Out)
	need("sparse matmul", x, rows*m.In)
	if rows <= 0 {
		return
	}
	if s.Dense(m.In) {
		if s.ID >= 0 {
			b.countHost(s.ID, rows*m.In)
		}
		b.denseT(dst, m, x, rows)
		return
	}
	sfx, err := suffix(m.DType)
	must(err)
	slot := b.useSite(s)
	stat := -1
	if s.ID >= 0 {
		b.countStat(s.ID)
		stat = s.ID
	}
	d, xp := buf(dst), buf(x).p
	sel, fsel := selectLaunch(rows), b.fn["at_select"]
	null := cudadrv.DevicePtr(0)
	if rows > gemvRows {
		b.ensure(scratchMasked, 4*rows*m.In)
		g, fg := gemmLaunch(rows, m.Out), b.fn["at_gemm_"+sfx]
		b.dev.Go(func(c *cudadrv.Ctx) error {
			xm := b.scratch[scratchMasked]
			if err := c.Launch(fsel, sel.grid, sel.block, 0, b.stream, xp, m.In, slot, stat, null, null, xm, null, 0, b.stats); err != nil {
				return err
			}
			return c.Launch(fg, g.grid, g.block, 0, b.stream, d.p, m.p, xm, rows, m.Out, m.In, 1)
		})
		return
	}
	b.ensure(scratchIdx, 4*rows*m.In)
	b.ensure(scratchCount, 4*rows)
	maxKept := m.In
	if s.TopK {
		maxKept = s.K
	}
	vec := vecOK(m.DType, m.Out)
	g, fg := gatherLaunch(rows, m.Out, maxKept, b.info.SMs, vecElems(m.DType, vec)), b.fn["at_gather_"+sfx]
	b.dev.Go(func(c *cudadrv.Ctx) error {
		idx, cnt := b.scratch[scratchIdx], b.scratch[scratchCount]
		if err := c.Launch(fsel, sel.grid, sel.block, 0, b.stream, xp, m.In, slot, stat, idx, cnt, null, d.p, m.Out, b.stats); err != nil {
			return err
		}
		return c.Launch(fg, g.grid, g.block, 0, b.stream, d.p, m.p, xp, idx, cnt, m.In, m.Out, boolInt(vec))
	})
}

func (b *Backend) countHost(id, n int) {
	if id >= len(b.hostKept) {
		b.hostKept = append(b.hostKept, make([]int64, id+1-len(b.hostKept))...)
		b.hostSeen = append(b.hostSeen, make([]int64, id+1-len(b.hostSeen))...)
	}
	b.hostKept[id] += int64(n)
	b.hostSeen[id] += int64(n)
}

// SparseStats implements backend.Backend: device counters (sparse sites)
// plus host counts (sites that ran dense), reset after reading.
func (b *Backend) SparseStats() (kept, seen []int64) {
	n := max(b.statCap, len(b.hostKept))
	dev := make([]uint64, 2*b.statCap)
	if b.statCap > 0 {
		must(b.dev.Do(func(c *cudadrv.Ctx) error {
			if err := c.CopyDtoH(unsafe.Pointer(&dev[0]), b.stats, 16*b.statCap, b.stream); err != nil {
				return err
			}
			return c.Memset(b.stats, 0, 16*b.statCap, b.stream)
		}))
	}
	kept, seen = make([]int64, n), make([]int64, n)
	last := -1
	for i := range n {
		if i < b.statCap {
			kept[i], seen[i] = int64(dev[2*i]), int64(dev[2*i+1])
		}
		if i < len(b.hostKept) {
			kept[i] += b.hostKept[i]
			seen[i] += b.hostSeen[i]
		}
		if seen[i] != 0 {
			last = i
		}
	}
	b.hostKept, b.hostSeen = nil, nil
	if last < 0 {
		return nil, nil
	}
	return kept[:last+1], seen[:last+1]
}
