// Package gather multiplies float32 activations by weights stored
// transposed (input-channel-major), the layout of activation-sparse decode:
// dropping input j skips one contiguous row of Out weights, so a product
// that keeps a fraction 1−s of the inputs reads a fraction 1−s of the bytes.
//
// Conventions: the model's weight W is (Out, In) row-major; a Matrix holds
// T = Wᵀ, In rows of Out values, in the weight's own dtype, widened to
// float32 on the fly. Activations x are n×In and results dst are n×Out,
// row-major float32, owned by the caller. All sums are float32.
//
// Gather (decode, one activation row) reads only the kept rows of T; each
// thread takes a contiguous share of the kept rows and sums them over every
// output column into its own buffer, so each access is a whole row; the
// buffers are added at the end (docs/cpu-speed.md). Dense (prefill, or a
// site that keeps every input) reads every row once per call and reuses it
// across all activation rows. TopK and Threshold pick the kept inputs.
package gather

import (
	"fmt"
	"sync"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/pool"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Matrix is a weight stored transposed: In rows (one per input channel) of
// Out values of type DType. Q8_0 rows are Out/32 blocks of 34 bytes (an f16
// scale, then 32 int8), so its blocks run along the output dimension and
// Out must be a multiple of 32.
type Matrix struct {
	DType   model.DType
	In, Out int

	t        []byte // In rows of rowBytes
	rowBytes int
}

// NewMatrix transposes data, an (out, in) row-major weight of type d as a
// model file stores it, into a new Matrix of the same type. It uses
// Threads() goroutines and never keeps data.
//
// Q8_0 data has its blocks along in; the rows of T need them along out, so
// the weights are decoded to float32 and quantised again in blocks of 32
// outputs (the same rounding as model.Encode). That adds a second rounding
// of at most half a step (amax/254 of the new block) to every weight, on
// top of the file's own. A caller that wants the file's values exactly
// can decode them and build an F16 Matrix instead, at twice the bytes.
func NewMatrix(d model.DType, out, in int, data []byte) (*Matrix, error) {
	if out <= 0 || in <= 0 {
		return nil, fmt.Errorf("gather: %s matrix %d×%d: sizes must be positive", d, out, in)
	}
	srcRow, rowBytes := d.Bytes(in), d.Bytes(out)
	switch {
	case d < model.F32 || d > model.Q8_0:
		return nil, fmt.Errorf("gather: unsupported dtype %s", d)
	case srcRow < 0:
		return nil, fmt.Errorf("gather: %s matrix %d×%d: %d inputs is not whole blocks", d, out, in, in)
	case rowBytes < 0:
		return nil, fmt.Errorf("gather: %s matrix %d×%d: transposed Q8_0 needs outputs in whole blocks of %d", d, out, in, model.Q8Block)
	case out > maxInt/srcRow || in > maxInt/rowBytes:
		return nil, fmt.Errorf("gather: %s matrix %d×%d is too large", d, out, in)
	case len(data) != out*srcRow:
		return nil, fmt.Errorf("gather: %s matrix %d×%d needs %d bytes, got %d", d, out, in, out*srcRow, len(data))
	}
	m := &Matrix{DType: d, In: in, Out: out, t: alignedBytes(in * rowBytes), rowBytes: rowBytes}
	if d == model.Q8_0 {
		m.requantize(data)
	} else {
		m.transpose(data, d.Bytes(1))
	}
	return m, nil
}

const maxInt = int(^uint(0) >> 1)

// Bytes is the size of the transposed weights.
func (m *Matrix) Bytes() int { return len(m.t) }

// minParallel is the number of weights read below which a product runs on
// the calling goroutine alone: waking workers costs more than it saves.
const minParallel = 64 << 10

// Threads is the number of threads the products use: pool.Threads, shared
// by all CPU kernels.
func Threads() int { return pool.Threads() }

// SetThreads sets the number of threads the products (and every other user
// of package pool) use; n < 1 means 1.
func SetThreads(n int) { pool.SetThreads(n) }

// task is one product, split into chunks for the pool: Gather (n == 0)
// into chunks of kept rows, each summed over every output column into its
// own buffer (chunk 0 into dst, the others into part) and added up after;
// Dense into chunks of output columns.
type task struct {
	m      *Matrix
	dst, x []float32
	idx    []int32 // kept rows; nil with all set: every row
	all    bool
	n      int       // activation rows for Dense; 0 for Gather
	chunk  int       // Dense: output columns a chunk
	parts  int       // Gather: chunks of rows
	part   []float32 // Gather: (parts−1)·Out partial sums
}

// Do computes chunk c of the task.
func (t *task) Do(c int) {
	if t.n == 0 {
		rows := t.kept()
		r0, r1 := c*rows/t.parts, (c+1)*rows/t.parts
		y := t.dst
		if c > 0 {
			y = t.part[(c-1)*t.m.Out : c*t.m.Out]
		}
		gatherCols(y, t.m, t.x, t.idx, t.all, r0, r1, 0, t.m.Out)
		return
	}
	o0 := c * t.chunk
	denseCols(t.dst, t.m, t.x, t.n, o0, min(o0+t.chunk, t.m.Out))
}

// run computes t, split across the pool's threads when the work (the
// number of weights the product reads) pays for the hand-off. The pool
// gets a recycled copy of t, so that a product allocates nothing.
func run(t task, work int) {
	var chunks int
	if t.n == 0 {
		t.parts = gatherParts(t.kept(), work, Threads())
		chunks = t.parts
	} else {
		t.chunk = chunkCols(t.m.Out, work, Threads())
		chunks = (t.m.Out + t.chunk - 1) / t.chunk
	}
	if chunks == 1 {
		t.parts = 1
		t.Do(0)
		return
	}
	p := tasks.Get().(*task)
	part := p.part
	*p = t
	if need := (t.parts - 1) * t.m.Out; t.n == 0 {
		if cap(part) < need {
			part = make([]float32, need)
		}
		p.part = part[:need]
	}
	pool.Run(chunks, p)
	if t.n == 0 {
		for c := 1; c < t.parts; c++ {
			addTo(t.dst[:t.m.Out], p.part[(c-1)*t.m.Out:c*t.m.Out])
		}
	}
	*p = task{part: part} // keep no caller's buffers alive
	tasks.Put(p)
}

var tasks = sync.Pool{New: func() any { return new(task) }}

// kept is the number of rows a Gather reads: len(idx), or In with all.
func (t *task) kept() int {
	if t.all {
		return t.m.In
	}
	return len(t.idx)
}

// addTo adds x to y.
func addTo(y, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += x[i]
	}
}

// gatherParts is how many chunks of kept rows a Gather takes: one a
// thread, so that each thread streams whole weight rows (the longest
// contiguous runs the layout has: measured faster than splitting the
// columns, whose runs are a fraction of a row), or one when the product
// is too small to split.
func gatherParts(rows, work, threads int) int {
	if threads <= 1 || work < minParallel || rows < 8*threads {
		return 1
	}
	return threads
}

// chunkCols is how many output columns one parallel task of Dense (n > 1)
// takes: one chunk
// a thread, a multiple of 64 (whole Q8_0 blocks, whole cache lines), since
// the longer the run a thread reads from each row, the better the hardware
// prefetchers keep up (measured: two chunks a thread was slower); never
// narrower than 512. It returns out or more when the product is too small
// to split.
func chunkCols(out, work, threads int) int {
	if threads <= 1 || work < minParallel || out < 128 {
		return out
	}
	c := (out + threads - 1) / threads
	return max((c+63)/64*64, min(512, out))
}

// Gather computes dst[o] = Σ_{j ∈ idx} x[j]·T[j, o] for every output o:
// the product with the inputs outside idx dropped. idx holds distinct
// inputs in [0, In), best in ascending order (the order TopK and Threshold
// give, which reads the weights front to back); an empty idx gives zeros.
// dst has Out values and x has In.
func Gather(dst []float32, m *Matrix, x []float32, idx []int32) {
	m.check(dst, x, 1)
	for _, j := range idx {
		if uint(j) >= uint(m.In) {
			panic(fmt.Sprintf("gather: index %d out of range [0,%d)", j, m.In))
		}
	}
	run(task{m: m, dst: dst, x: x, idx: idx}, len(idx)*m.Out)
}

// Dense computes dst[r*Out+o] = Σ_j x[r*In+j]·T[j, o] for r < n: every
// input kept. n == 1 is Gather over all rows; larger n reuses each decoded
// block of T across all activation rows.
func Dense(dst []float32, m *Matrix, x []float32, n int) {
	m.check(dst, x, n)
	switch {
	case n == 0:
	case n == 1:
		run(task{m: m, dst: dst, x: x, all: true}, m.In*m.Out)
	default:
		run(task{m: m, dst: dst, x: x, n: n}, n*m.In*m.Out)
	}
}

// check panics on shapes that are a programming error.
func (m *Matrix) check(dst, x []float32, n int) {
	switch {
	case n < 0:
		panic(fmt.Sprintf("gather: %d activation rows", n))
	case len(x) < n*m.In:
		panic(fmt.Sprintf("gather: x has %d values, want %d×%d", len(x), n, m.In))
	case len(dst) < n*m.Out:
		panic(fmt.Sprintf("gather: dst has %d values, want %d×%d", len(dst), n, m.Out))
	}
}
