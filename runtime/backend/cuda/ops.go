package cuda

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/acttail/acttail-gpu/cgo/cudadrv"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
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
	l := embedLaunch(len(ids), m.In)
	if b.step.on && len(b.step.vars)+len(ids) <= maxStepVars {
		// Step variables (consecutive, any number of them): the step's
		// graph stays the same.
		first := b.stepVar(int(ids[0]))
		for _, t := range ids[1:] {
			b.stepVar(int(t))
		}
		b.launch("at_embed", l, d.p, m.p, first, m.In, int(m.DType), make([]byte, 4*inlineTokens))
		return
	}
	if len(ids) <= inlineTokens { // by value: no host copy, so a step stays capturable
		b.launch("at_embed", l, d.p, m.p, cudadrv.DevicePtr(0), m.In, int(m.DType), packTokens(ids))
		return
	}
	b.ensure(scratchTokens, 4*len(ids))
	b.hostCopy()
	f := b.fn["at_embed"]
	b.queue("embed+copy", func(c *cudadrv.Ctx) error {
		tok := b.scratch[scratchTokens]
		if err := c.CopyHtoD(tok, unsafe.Pointer(&ids[0]), 4*len(ids), b.stream); err != nil {
			return err
		}
		return c.Launch(f, l.grid, l.block, 0, b.stream, d.p, m.p, tok, m.In, int(m.DType), make([]byte, 4*inlineTokens))
	})
}

// RMSNorm implements backend.Backend. It is queued with the next op, which
// may do it in its own launch: see flush, zeroFor and sparse.
func (b *Backend) RMSNorm(dst, x backend.Buffer, w backend.Weight, rows int, eps float32) {
	v := w.(*Vec)
	d, xs := need("rmsnorm", dst, rows*v.n), need("rmsnorm", x, rows*v.n)
	if rows <= 0 { // a zero grid would be launched as one block (Dim3.norm)
		return
	}
	b.flush(nil)
	b.norm = &pendingNorm{dst: d, x: xs, w: v, rows: rows, eps: eps}
}

// pendingNorm is an RMSNorm not queued yet.
type pendingNorm struct {
	dst, x *Buf
	w      *Vec
	rows   int
	eps    float32
}

// flush queues the pending op (an RMSNorm or a SwiGLU), if any. zero, when
// not nil, is the group that reads a pending norm's output next: the launch
// also zeroes the group's outputs that do not accumulate (at_zero's job),
// under the tag "at_rmsnorm+zero". Every op that queues work or touches
// device memory flushes first, so a deferred op keeps its place in the
// order of ops.
func (b *Backend) flush(zero []proj) {
	if sg := b.swiglu; sg != nil {
		b.swiglu = nil
		b.queueNow("at_swiglu", b.launchFunc("at_swiglu", strideGrid(sg.n), sg.gate.p, sg.up.p, int64(sg.n)))
	}
	n := b.norm
	if n == nil {
		return
	}
	b.norm = nil
	name := "at_rmsnorm"
	if len(zero) > 0 {
		name = "at_rmsnorm+zero"
	}
	b.queueNow(name, b.launchFunc("at_rmsnorm", normLaunch(n.rows), n.dst.p, n.x.p, n.w.p, n.w.n, n.eps, packGroup(zero)))
}

// pendingSwiGLU is a SwiGLU not queued yet.
type pendingSwiGLU struct {
	gate, up *Buf
	n        int
}

// zeroFor zeroes the outputs of group g (image: its packGroup) that do not
// accumulate, before a gather adds into them: inside the pending RMSNorm's
// launch when that norm writes x, the group's input, else with at_zero.
func (b *Backend) zeroFor(g []proj, rows int, image []byte, x *Buf) {
	if n := b.norm; n != nil && n.dst == x && n.rows == rows {
		b.flush(g)
		return
	}
	b.zero(g, rows, image)
}

// MatMul implements backend.Backend.
func (b *Backend) MatMul(dst backend.Buffer, w backend.Weight, x backend.Buffer, rows int) {
	b.MatMuls(x, rows, []backend.Proj{{Dst: dst, W: w}})
}

// MatMuls implements backend.Backend. Decode groups (rows ≤ 8) of one
// dtype and layout are one launch: at_gemv for row-major weights, the
// gather over every input for input-channel-major ones. Longer chunks run
// the GEMM once a projection.
func (b *Backend) MatMuls(x backend.Buffer, rows int, ps []backend.Proj) {
	for _, p := range ps {
		m := mat(p.W)
		need("matmul", p.Dst, rows*m.Out)
		need("matmul", x, rows*m.In)
	}
	if rows <= 0 {
		return
	}
	for len(ps) > 0 {
		n := fusable(ps, false)
		b.dense(x, rows, ps[:n])
		ps = ps[n:]
	}
}

// fusable is how many leading projections of ps one launch takes: up to
// groupMax of one dtype, layout and input width; with sites, none of them
// in the shared last c_sites slot (a site of no table) unless alone.
func fusable(ps []backend.Proj, sites bool) int {
	m0 := mat(ps[0].W)
	n := 1
	for n < min(len(ps), groupMax) {
		m := mat(ps[n].W)
		if m.DType != m0.DType || m.Trans != m0.Trans || m.In != m0.In ||
			sites && (!tabled(ps[0]) || !tabled(ps[n])) {
			break
		}
		n++
	}
	return n
}

func tabled(p backend.Proj) bool {
	_, ok := tableIndex(p)
	return ok
}

// group describes ps (one launch's worth, from fusable) for the kernels,
// with sites unset.
func group(ps []backend.Proj) []proj {
	g := make([]proj, len(ps))
	for i, p := range ps {
		m := mat(p.W)
		g[i] = proj{y: buf(p.Dst).p, w: m.p, out: m.Out, stat: -1, accum: p.Add}
	}
	return g
}

func outs(g []proj) []int {
	o := make([]int, len(g))
	for i, p := range g {
		o[i] = p.out
	}
	return o
}

// vecAll reports whether every projection's output rows take 16-byte loads.
func vecAll(d model.DType, g []proj) bool {
	for _, p := range g {
		if !vecOK(d, p.out) {
			return false
		}
	}
	return true
}

// zero queues at_zero over the outputs of group g (image: its packGroup)
// that do not accumulate; nothing when all do.
func (b *Backend) zero(g []proj, rows int, image []byte) {
	most := 0
	for _, p := range g {
		if !p.accum { // those add to what y holds
			most = max(most, rows*p.out)
		}
	}
	if most == 0 {
		return
	}
	b.launch("at_zero", strideGrid(most), image, rows)
}

// dense is one fused group of dense products (see MatMuls).
func (b *Backend) dense(x backend.Buffer, rows int, ps []backend.Proj) {
	m := mat(ps[0].W)
	sfx, err := suffix(m.DType)
	must(err)
	g, xp := group(ps), buf(x).p
	if rows > gemvRows {
		b.gemms(m, func() cudadrv.DevicePtr { return xp }, 0, rows, g)
		return
	}
	if !m.Trans {
		b.launch("at_gemv_"+sfx, gemvLaunch(outs(g)...), xp, rows, m.In, boolInt(vecOK(m.DType, m.In)), packGroup(g))
		return
	}
	// Input-channel-major: the gather over every input (idx = null).
	vec := vecAll(m.DType, g)
	l := gatherLaunch(rows, outs(g), m.In, b.info.SMs, vecElems(m.DType, vec))
	image, null := packGroup(g), cudadrv.DevicePtr(0)
	b.zeroFor(g, rows, image, buf(x))
	b.launch("at_gather_"+sfx, l, xp, null, null, m.In, rows, boolInt(vec), image)
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// RoPE rotates every head of x as RoPECache does (at_rope), for the
// kernel tests and benchmarks; the engine uses RoPECache.
func (b *Backend) RoPE(x backend.Buffer, rows, heads, headDim, pos0 int, freqs []float32) {
	need("rope", x, rows*heads*headDim)
	if rows <= 0 || heads*(headDim/2) <= 0 {
		b.checkFreqs(freqs, headDim)
		return
	}
	b.useFreqs(freqs, headDim)
	l, fn, p := ropeLaunch(rows, heads, headDim), b.fn["at_rope"], buf(x).p
	b.queue("at_rope", func(c *cudadrv.Ctx) error {
		return c.Launch(fn, l.grid, l.block, 0, b.stream, p, b.dFreqs, rows, heads, headDim, pos0)
	})
}

// stepArg is a value as a kernel argument: 0 when the kernel reads it from
// step variable posv instead, so that the argument bytes do not change
// from step to step.
func stepArg(v int, posv cudadrv.DevicePtr) int {
	if posv != 0 {
		return 0
	}
	return v
}

// RoPECache implements backend.Backend in one launch (at_rope_cache).
func (b *Backend) RoPECache(q, k, v, kc, vc backend.Buffer, rows, heads, kvHeads, headDim, pos0 int, freqs []float32) {
	kvDim := kvHeads * headDim
	if pos0 < 0 {
		panic(fmt.Sprintf("cuda: rope cache: position %d", pos0))
	}
	qs, ks, vs := need("rope cache", q, rows*heads*headDim), need("rope cache", k, rows*kvDim), need("rope cache", v, rows*kvDim)
	kcs, vcs := need("rope cache", kc, (pos0+rows)*kvDim), need("rope cache", vc, (pos0+rows)*kvDim)
	if rows <= 0 || (heads+kvHeads)*headDim <= 0 {
		b.checkFreqs(freqs, headDim)
		return
	}
	b.useFreqs(freqs, headDim)
	l, fn := ropeCacheLaunch(rows, heads, kvHeads, headDim), b.fn["at_rope_cache"]
	posv := b.stepVar(pos0)
	b.queue("at_rope_cache", func(c *cudadrv.Ctx) error {
		return c.Launch(fn, l.grid, l.block, 0, b.stream, qs.p, ks.p, vs.p, kcs.p, vcs.p, b.dFreqs, heads, kvHeads, headDim, stepArg(pos0, posv), posv)
	})
}

func (b *Backend) checkFreqs(freqs []float32, headDim int) {
	if len(freqs) < headDim/2 {
		panic(fmt.Sprintf("cuda: rope: %d frequencies for head_dim %d", len(freqs), headDim))
	}
}

// useFreqs makes the device hold freqs (uploaded when they change).
func (b *Backend) useFreqs(freqs []float32, headDim int) {
	b.checkFreqs(freqs, headDim)
	if slices.Equal(b.freqs, freqs) {
		return
	}
	b.freqs = slices.Clone(freqs)
	f := b.freqs
	b.do(func(c *cudadrv.Ctx) error {
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
	b.queue("copy", func(c *cudadrv.Ctx) error { return c.CopyDtoD(d, s, 4*n, b.stream) })
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
	posv := b.stepVar(pos0)
	n := pos0 + rows
	if posv != 0 { // a step: split for the cache's capacity, so that the grid stays the same
		n = ks.n / (nKVHeads * headDim)
	}
	splits, chunk := attentionSplits(rows, n)
	if splits == 1 {
		b.launch("at_attention", l, o.p, qs.p, ks.p, vs.p, nHeads, nKVHeads, headDim, stepArg(pos0, posv), 0, cudadrv.DevicePtr(0), posv)
		return
	}
	b.ensure(scratchAttn, 4*rows*nHeads*splits*(headDim+2))
	l.grid.Z = splits
	fa, fc := b.fn["at_attention"], b.fn["at_attention_combine"]
	comb := launch{grid: cudadrv.Dim3{X: nHeads, Y: rows}, block: cudadrv.Dim3{X: eltThreads}}
	b.queue("at_attention", func(c *cudadrv.Ctx) error {
		part := b.scratch[scratchAttn]
		return c.Launch(fa, l.grid, l.block, 0, b.stream, o.p, qs.p, ks.p, vs.p, nHeads, nKVHeads, headDim, stepArg(pos0, posv), chunk, part, posv)
	})
	b.queue("at_attention_combine", func(c *cudadrv.Ctx) error {
		return c.Launch(fc, comb.grid, comb.block, 0, b.stream, o.p, b.scratch[scratchAttn], nHeads, headDim, splits)
	})
}

// SwiGLU implements backend.Backend.
// It is queued with the next op: a top-k down projection that reads gate
// next does the SwiGLU itself (at_select with su; see sparse).
func (b *Backend) SwiGLU(gate, up backend.Buffer, n int) {
	g, u := need("swiglu", gate, n), need("swiglu", up, n)
	if n <= 0 {
		return
	}
	b.flush(nil)
	b.swiglu = &pendingSwiGLU{gate: g, up: u, n: n}
}

// Add: dst[i] += x[i] for n values (at_add), for the kernel tests; the
// engine's residual adds are fused into the products (Proj.Add).
func (b *Backend) Add(dst, x backend.Buffer, n int) {
	d, xs := need("add", dst, n), need("add", x, n)
	if n <= 0 {
		return
	}
	b.launch("at_add", strideGrid(n), d.p, xs.p, int64(n))
}

// Pick implements backend.Picker: one at_pick launch over rows rows of n
// logits, each row's 1/temperature and u in a small device array, and one
// read of the rows token ids.
func (b *Backend) Pick(logits backend.Buffer, rows, n int, temps, us []float32) []int {
	b.flush(nil) // the pending op goes first
	b.outsideStep("Pick")
	lb := buf(logits)
	if rows <= 0 || n <= 0 || rows*n > lb.n || len(temps) < rows || len(us) < rows {
		panic(fmt.Sprintf("cuda: pick: %d rows of %d logits in a buffer of %d, %d temperatures, %d variates", rows, n, lb.n, len(temps), len(us)))
	}
	params := pickParams(temps[:rows], us[:rows])
	b.ensure(scratchResult, 4*rows)
	b.ensure(scratchPick, 8*rows)
	res := make([]int32, rows)
	b.do(func(c *cudadrv.Ctx) error {
		out := b.scratch[scratchResult]
		if err := b.launchPick(c, out, lb.p, n, params); err != nil {
			return err
		}
		return c.CopyDtoH(unsafe.Pointer(&res[0]), out, 4*rows, b.stream)
	})
	ids := make([]int, rows)
	for r, v := range res {
		ids[r] = int(v)
	}
	return ids
}

// pickParams is at_pick's (1/temperature, u) for each row; zeros for a
// greedy row. Callers ensure scratchPick before queuing launchPick.
func pickParams(temps, us []float32) []float32 {
	params := make([]float32, 2*len(temps))
	for r, t := range temps {
		if t > 0 {
			params[2*r], params[2*r+1] = 1/t, us[r]
		}
	}
	return params
}

// launchPick queues, on the device thread, the copy of params to the
// device and at_pick over len(params)/2 rows of n logits, writing the ids
// to out. The driver stages params before the copy call returns (pageable
// memory), so the caller's slice may go.
func (b *Backend) launchPick(c *cudadrv.Ctx, out, logits cudadrv.DevicePtr, n int, params []float32) error {
	par := b.scratch[scratchPick]
	if err := c.CopyHtoD(par, unsafe.Pointer(&params[0]), 4*len(params), b.stream); err != nil {
		return err
	}
	return c.Launch(b.fn["at_pick"], cudadrv.Dim3{X: len(params) / 2}, cudadrv.Dim3{X: sampleThreads}, 0, b.stream, out, logits, n, par)
}

// siteTables places budgets tables (backend.Budgets) in c_sites: each
// table holds a run of slots from its base, uploaded in one copy when a
// product first uses it and kept there, so a table in use costs no copy a
// step, whichever sequences run under it. When a new table does not fit
// in the slots left, every table is dropped and re-placed on its next
// use. The last slot is shared by sites of no table, rewritten as needed.
type siteTables struct {
	base map[*backend.Budgets]int
	next int // the first slot no table holds
}

// tableIndex is p's site's index in its table, if it has one that this
// backend can place (of at most maxSites-1 sites, holding the site).
func tableIndex(p backend.Proj) (int, bool) {
	t := p.Table
	if t == nil || len(t.Sites) == 0 || len(t.Sites) > maxSites-1 {
		return 0, false
	}
	i := p.Budget.ID - t.Sites[0].ID
	if i < 0 || i >= len(t.Sites) || !t.Sites[i].Equal(p.Budget) {
		return 0, false
	}
	return i, true
}

// useSite makes c_sites hold p's site and returns its slot.
func (b *Backend) useSite(p backend.Proj) int {
	i, ok := tableIndex(p)
	if !ok {
		return b.writeSlot(maxSites-1, p.Budget)
	}
	base, ok := b.tables.base[p.Table]
	if !ok {
		base = b.placeTable(p.Table)
	}
	return base + i
}

// placeTable gives table t its run of slots and queues their upload
// (unless they hold its sites already), returning its base.
func (b *Backend) placeTable(t *backend.Budgets) int {
	st := &b.tables
	if st.base == nil || st.next+len(t.Sites) > maxSites-1 {
		st.base, st.next = map[*backend.Budgets]int{}, 0
	}
	base := st.next
	st.base[t], st.next = base, base+len(t.Sites)
	image, same := make([]byte, len(t.Sites)*siteBytes), true
	for i, s := range t.Sites {
		packed := packSite(s)
		same = same && b.mirror[base+i] == packed
		b.mirror[base+i] = packed
		copy(image[i*siteBytes:], packed[:])
	}
	if !same {
		dst := b.sites.Add(base * siteBytes)
		b.hostCopy()
		b.queue("sites", func(c *cudadrv.Ctx) error { return c.CopyHtoD(dst, unsafe.Pointer(&image[0]), len(image), b.stream) })
	}
	return base
}

// writeSlot makes slot hold s, queuing its upload if it does not, and
// returns the slot.
func (b *Backend) writeSlot(slot int, s backend.Budget) int {
	if packed := packSite(s); b.mirror[slot] != packed {
		b.mirror[slot] = packed
		p := packed // the closure's own copy (a variable it captures lives on the heap)
		dst := b.sites.Add(slot * siteBytes)
		b.hostCopy()
		b.queue("site", func(c *cudadrv.Ctx) error { return c.CopyHtoD(dst, unsafe.Pointer(&p[0]), siteBytes, b.stream) })
	}
	return slot
}

// countStat makes the device counters hold site id.
func (b *Backend) countStat(id int) {
	if id < b.statCap {
		return
	}
	n := max(id+1, 2*b.statCap, 64)
	b.do(func(c *cudadrv.Ctx) error {
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
	})
	b.statCap = n
}

// errWeightInformed refuses budgets whose sites rank by |x|·scale
// (backend.Site.Scale): the select kernels rank by |x| alone, and would
// silently compute another selection.
var errWeightInformed = errors.New("weight-informed selection is not on CUDA yet (plan selection wina or wina-shared): profile with --selection magnitude, or run on the CPU backend")

var _ backend.BudgetsChecker = (*Backend)(nil)

// CheckBudgets implements backend.BudgetsChecker: it refuses tables with
// weight-informed sites (errWeightInformed).
func (b *Backend) CheckBudgets(t *backend.Budgets) error {
	for _, s := range t.Sites {
		if s.Scale != nil {
			return errWeightInformed
		}
	}
	return nil
}

// SparseMatMul is SparseMatMuls of one product.
func (b *Backend) SparseMatMul(dst backend.Buffer, w backend.Weight, x backend.Buffer, rows int, s backend.Budget) {
	b.SparseMatMuls(x, rows, []backend.Proj{{Dst: dst, W: w, Budget: s}})
}

// SparseMatMuls implements backend.Backend. Sites that keep every input
// run as dense products (MatMuls on the transposed weights); the others go
// in groups of up to three (fusable) of one mode. Decode (rows ≤ 8), top-k:
// at_select writes each token's kept indices for every projection of the
// group and zeroes the outputs, at_gather adds the kept rows; threshold:
// the outputs are zeroed and at_gather_thr selects and adds in one launch,
// each block over its own slice of the inputs. Longer chunks: at_select
// writes the masked inputs and the GEMM runs on each transposed weight (the
// zeros cost flops, not correctness).
func (b *Backend) SparseMatMuls(x backend.Buffer, rows int, ps []backend.Proj) {
	for _, p := range ps {
		m := mat(p.W)
		if !m.Trans {
			panic("cuda: sparse matmul: weight was not uploaded with UploadSparse")
		}
		need("sparse matmul", p.Dst, rows*m.Out)
		need("sparse matmul", x, rows*m.In)
	}
	if rows <= 0 {
		return
	}
	for _, p := range ps {
		if p.Budget.Scale != nil && !p.Budget.Dense(mat(p.W).In) {
			b.fail(errWeightInformed)
			return
		}
	}
	var db, tb, hb [2 * groupMax]backend.Proj // room for the usual groups without allocating
	dense, topk, thr := db[:0], tb[:0], hb[:0]
	for _, p := range ps {
		m := mat(p.W)
		if !p.Budget.Dense(m.In) {
			if p.Budget.TopK {
				topk = append(topk, p)
			} else {
				thr = append(thr, p)
			}
			continue
		}
		if p.Budget.ID >= 0 {
			b.countHost(p.Budget.ID, rows*m.In)
		}
		dense = append(dense, p)
	}
	for len(dense) > 0 {
		n := fusable(dense, false)
		b.dense(x, rows, dense[:n])
		dense = dense[n:]
	}
	for _, sparse := range [][]backend.Proj{topk, thr} {
		for len(sparse) > 0 {
			n := fusable(sparse, true)
			b.sparse(x, rows, sparse[:n])
			sparse = sparse[n:]
		}
	}
}

// sparse is one fused group of sparse products (see SparseMatMuls).
func (b *Backend) sparse(x backend.Buffer, rows int, ps []backend.Proj) {
	m := mat(ps[0].W)
	sfx, err := suffix(m.DType)
	must(err)
	in, n := m.In, len(ps)
	g := group(ps)
	maxKept := 0
	for i, p := range ps {
		g[i].slot = b.useSite(p)
		if p.Budget.ID >= 0 {
			b.countStat(p.Budget.ID)
			g[i].stat = p.Budget.ID
		}
		kept := in
		if p.Budget.TopK {
			kept = p.Budget.K
		}
		maxKept = max(maxKept, kept)
	}
	image, xp := packGroup(g), buf(x).p
	sel, fsel := selectLaunch(rows, n), b.fn["at_select"]
	null := cudadrv.DevicePtr(0)
	if rows > gemvRows {
		b.ensure(scratchMasked, 4*n*rows*in)
		b.queue("at_select", func(c *cudadrv.Ctx) error {
			return c.Launch(fsel, sel.grid, sel.block, 0, b.stream, xp, in, rows, null, null, b.scratch[scratchMasked], b.stats, image,
				null, null, float32(0), null)
		})
		b.gemms(m, func() cudadrv.DevicePtr { return b.scratch[scratchMasked] }, rows*in, rows, g)
		return
	}
	vec := vecAll(m.DType, g)
	if !ps[0].Budget.TopK { // threshold: no at_select
		l, f := gatherThrLaunch(rows, outs(g), in, b.info.SMs, vecElems(m.DType, vec)), b.fn["at_gather_thr_"+sfx]
		b.zeroFor(g, rows, image, buf(x))
		b.queue("at_gather_thr_"+sfx, func(c *cudadrv.Ctx) error {
			return c.Launch(f, l.grid, l.block, 0, b.stream, xp, in, boolInt(vec), b.stats, image)
		})
		return
	}
	b.ensure(scratchIdx, 4*n*rows*in)
	b.ensure(scratchCount, 4*n*rows)
	gl, fg := gatherLaunch(rows, outs(g), maxKept, b.info.SMs, vecElems(m.DType, vec)), b.fn["at_gather_"+sfx]
	// The pending RMSNorm that writes x is done by at_select itself (every
	// block normalizes its token's row in registers; see sparse.cu).
	// So is a pending SwiGLU that writes x, for a group of one projection
	// (the down projection: its block rewrites x in place).
	tag, nx, nw, neps, su := "at_select", null, null, float32(0), null
	fits := in <= selectPer*selectThreads
	// An in-place norm (dst = x) is not merged into a group of several: the
	// first projection's block would rewrite the row the others still read.
	if nm := b.norm; nm != nil && nm.dst == buf(x) && nm.rows == rows && fits && (nm.x != nm.dst || n == 1) {
		tag, nx, nw, neps = "at_select+norm", nm.x.p, nm.w.p, nm.eps
		b.norm = nil
	}
	if sg := b.swiglu; sg != nil && sg.gate == buf(x) && sg.n == rows*in && n == 1 && fits {
		tag, su = "at_select+swiglu", sg.up.p
		b.swiglu = nil
	}
	b.queue(tag, func(c *cudadrv.Ctx) error {
		return c.Launch(fsel, sel.grid, sel.block, 0, b.stream, xp, in, rows, b.scratch[scratchIdx], b.scratch[scratchCount], null, b.stats, image,
			nx, nw, neps, su)
	})
	b.queue("at_gather_"+sfx, func(c *cudadrv.Ctx) error {
		return c.Launch(fg, gl.grid, gl.block, 0, b.stream, xp, b.scratch[scratchIdx], b.scratch[scratchCount], in, rows, boolInt(vec), image)
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
	b.flush(nil) // the pending op goes first
	b.outsideStep("sparse stats")
	n := max(b.statCap, len(b.hostKept))
	dev := make([]uint64, 2*b.statCap)
	if b.statCap > 0 {
		b.do(func(c *cudadrv.Ctx) error {
			if err := c.CopyDtoH(unsafe.Pointer(&dev[0]), b.stats, 16*b.statCap, b.stream); err != nil {
				return err
			}
			return c.Memset(b.stats, 0, 16*b.statCap, b.stream)
		})
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
