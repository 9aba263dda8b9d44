// Package cpu is the reference backend: plain Go for the element-wise ops,
// package attend's kernels for attention, and the matmul and gather
// packages' vectorized kernels for the projections. Buffers are Go slices;
// weights stay in their file dtype and are widened on the fly: a dense
// model reads a window of the memory-mapped file, a sparse one its own
// transposed copy (the file's pages are then released).
package cpu

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/attend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/gather"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/matmul"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/pool"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Backend is the CPU backend. The zero value is not usable; call New.
type Backend struct {
	threads int
	stats   stats
	scratch Buf // products that add to their destination (Proj.Add)
}

// New returns a CPU backend using threads threads (0: all cores).
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	matmul.SetThreads(threads)
	gather.SetThreads(threads)
	return &Backend{threads: threads}
}

// Buf is a CPU buffer.
type Buf struct{ D []float32 }

// Len implements backend.Buffer.
func (b *Buf) Len() int { return len(b.D) }

// Vec is an uploaded 1-D weight, widened to float32.
type Vec struct{ D []float32 }

// Shape implements backend.Weight.
func (v *Vec) Shape() []int { return []int{len(v.D)} }

// Mat is an uploaded matrix in its file dtype.
type Mat struct{ M *matmul.Matrix }

// Shape implements backend.Weight.
func (m *Mat) Shape() []int { return []int{m.M.Rows, m.M.Cols} }

var _ backend.Backend = (*Backend)(nil)

// Name implements backend.Backend.
func (*Backend) Name() string { return "cpu" }

// Describe implements backend.Backend.
func (c *Backend) Describe() string {
	return fmt.Sprintf("cpu: %d threads, %s/%s", c.threads, runtime.GOOS, runtime.GOARCH)
}

// Close implements backend.Backend.
func (*Backend) Close() error { return nil }

// Err implements backend.Backend: the CPU has no device errors.
func (*Backend) Err() error { return nil }

// Upload implements backend.Backend.
func (*Backend) Upload(t *model.Tensor) (backend.Weight, error) {
	switch len(t.Shape) {
	case 1:
		d, err := t.Float32()
		if err != nil {
			return nil, err
		}
		return &Vec{d}, nil
	case 2:
		m, err := matmul.NewMatrix(t.DType, t.Shape[0], t.Shape[1], t.Data)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", t.Name, err)
		}
		return &Mat{m}, nil
	}
	return nil, fmt.Errorf("upload %s: unsupported rank %d", t.Name, len(t.Shape))
}

// Alloc implements backend.Backend.
func (*Backend) Alloc(n int) backend.Buffer { return &Buf{make([]float32, n)} }

// Free implements backend.Backend: the garbage collector frees the memory.
func (*Backend) Free(backend.Buffer) {}

// FreeMemory implements backend.Memory: the memory the kernel reports as
// available to new allocations (MemAvailable of /proc/meminfo).
func (*Backend) FreeMemory() (int64, error) { return memAvailable("/proc/meminfo") }

// View implements backend.Backend.
func (*Backend) View(b backend.Buffer, off, n int) backend.Buffer {
	return &Buf{b.(*Buf).D[off : off+n : off+n]}
}

// Write implements backend.Backend.
func (*Backend) Write(b backend.Buffer, off int, src []float32) { copy(b.(*Buf).D[off:], src) }

// Read implements backend.Backend.
func (*Backend) Read(dst []float32, b backend.Buffer, off int) { copy(dst, b.(*Buf).D[off:]) }

func d(b backend.Buffer) []float32 { return b.(*Buf).D }

// Embed implements backend.Backend.
func (*Backend) Embed(dst backend.Buffer, table backend.Weight, tokens []int) {
	m := table.(*Mat).M
	rowBytes := m.DType.Bytes(m.Cols)
	out := d(dst)
	for r, tok := range tokens {
		row := out[r*m.Cols : (r+1)*m.Cols]
		if err := model.Decode(row, m.Data[tok*rowBytes:(tok+1)*rowBytes], m.DType); err != nil {
			panic(err) // shapes were checked at upload
		}
	}
}

// RMSNorm implements backend.Backend.
func (*Backend) RMSNorm(dst, x backend.Buffer, w backend.Weight, rows int, eps float32) {
	wt := w.(*Vec).D
	n := len(wt)
	xs, ds := d(x), d(dst)
	for r := range rows {
		RMSNormRow(ds[r*n:(r+1)*n], xs[r*n:(r+1)*n], wt, eps)
	}
}

// RMSNormRow normalizes one row (dst may alias x).
func RMSNormRow(dst, x, w []float32, eps float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	scale := 1 / float32(math.Sqrt(float64(ss/float32(len(x))+eps)))
	for i, v := range x {
		dst[i] = w[i] * (scale * v)
	}
}

// MatMul implements backend.Backend.
func (*Backend) MatMul(dst backend.Buffer, w backend.Weight, x backend.Buffer, rows int) {
	m := w.(*Mat).M
	matmul.MatMul(d(dst)[:rows*m.Rows], m, d(x)[:rows*m.Cols], rows)
}

// MatMuls implements backend.Backend: one product after another (each is
// already spread over every core).
func (c *Backend) MatMuls(x backend.Buffer, rows int, ps []backend.Proj) {
	for _, p := range ps {
		dst := c.sum(p, rows)
		c.MatMul(dst, p.W, x, rows)
		c.added(p, dst, rows)
	}
}

// sum is where the product of p goes: p.Dst, or a scratch buffer that
// added then adds to p.Dst when p.Add is set.
func (c *Backend) sum(p backend.Proj, rows int) backend.Buffer {
	if !p.Add {
		return p.Dst
	}
	n := rows * p.W.Shape()[0]
	if len(c.scratch.D) < n {
		c.scratch.D = make([]float32, n)
	}
	return &Buf{c.scratch.D[:n]}
}

func (c *Backend) added(p backend.Proj, dst backend.Buffer, rows int) {
	if p.Add {
		c.Add(p.Dst, dst, rows*p.W.Shape()[0])
	}
}

// RoPE rotates adjacent pairs (2i, 2i+1) of every head of x (rows of
// heads × headDim) by angle (pos0 + r) · freqs[i] (RoPECache's rotation).
func (*Backend) RoPE(x backend.Buffer, rows, heads, headDim, pos0 int, freqs []float32) {
	xs := d(x)
	half := headDim / 2
	cs := make([]float32, 2*half)
	for r := range rows {
		pos := float64(pos0 + r)
		for i := range half {
			s, c := math.Sincos(pos * float64(freqs[i]))
			cs[2*i], cs[2*i+1] = float32(c), float32(s)
		}
		row := xs[r*heads*headDim : (r+1)*heads*headDim]
		for h := range heads {
			v := row[h*headDim : (h+1)*headDim]
			for i := range half {
				c, s := cs[2*i], cs[2*i+1]
				a, b := v[2*i], v[2*i+1]
				v[2*i] = a*c - b*s
				v[2*i+1] = a*s + b*c
			}
		}
	}
}

// RoPECache implements backend.Backend: the two rotations and the two copies.
func (c *Backend) RoPECache(q, k, v, kc, vc backend.Buffer, rows, heads, kvHeads, headDim, pos0 int, freqs []float32) {
	c.RoPE(q, rows, heads, headDim, pos0, freqs)
	c.RoPE(k, rows, kvHeads, headDim, pos0, freqs)
	kvDim := kvHeads * headDim
	c.Copy(kc, pos0*kvDim, k, 0, rows*kvDim)
	c.Copy(vc, pos0*kvDim, v, 0, rows*kvDim)
}

// Copy implements backend.Backend.
func (*Backend) Copy(dst backend.Buffer, dstOff int, src backend.Buffer, srcOff, n int) {
	copy(d(dst)[dstOff:dstOff+n], d(src)[srcOff:srcOff+n])
}

// Attention implements backend.Backend: package attend's kernels, split
// over (row, head) pairs, each independent.
func (c *Backend) Attention(out, q, kc, vc backend.Buffer, rows, nHeads, nKVHeads, headDim, pos0 int) {
	os, qs, ks, vs := d(out), d(q), d(kc), d(vc)
	s := attend.Shape{Rows: rows, NHeads: nHeads, NKVHeads: nKVHeads, HeadDim: headDim, Pos0: pos0}
	work := rows * nHeads * (pos0 + rows) * headDim
	c.parallel(s.Jobs(), work, func(lo, hi int) {
		sp := scores.Get().(*[]float32)
		if cap(*sp) < s.Scratch() {
			*sp = make([]float32, s.Scratch())
		}
		attend.Heads(os, qs, ks, vs, *sp, s, lo, hi)
		scores.Put(sp)
	})
}

// scores is the scratch of Attention's chunks: one score a position.
var scores = sync.Pool{New: func() any { return new([]float32) }}

// SwiGLU implements backend.Backend.
func (*Backend) SwiGLU(gate, up backend.Buffer, n int) {
	g, u := d(gate)[:n], d(up)[:n]
	for i, x := range g {
		g[i] = x / (1 + float32(math.Exp(float64(-x)))) * u[i]
	}
}

// Add: dst[i] += x[i] for n values (the residual add of a product with
// Proj.Add).
func (*Backend) Add(dst, x backend.Buffer, n int) {
	ds, xs := d(dst)[:n], d(x)[:n]
	for i, v := range xs {
		ds[i] += v
	}
}

// parallel runs fn over [0,n) in contiguous chunks on the shared worker
// pool; below about 64K multiply-adds of work the hand-off costs more than
// it saves, so small jobs run inline.
func (c *Backend) parallel(n, work int, fn func(lo, hi int)) {
	t := min(c.threads, n)
	if work < 1<<16 || t <= 1 {
		fn(0, n)
		return
	}
	pool.Run(t, pool.Func(func(i int) { fn(i*n/t, (i+1)*n/t) }))
}
