package cpu

import (
	"fmt"
	"sync"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/gather"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// TMat is a projection stored input-channel-major for SparseMatMul: a
// gather.Matrix, in the tensor's dtype. Q8_0 is quantised again in blocks
// along the outputs (see gather.NewMatrix for the extra rounding), or
// widened to F16 when the outputs are not whole blocks.
type TMat struct{ M *gather.Matrix }

// Shape implements backend.Weight: the model's (out, in).
func (t *TMat) Shape() []int { return []int{t.M.Out, t.M.In} }

// UploadSparse implements backend.Backend.
func (c *Backend) UploadSparse(t *model.Tensor) (backend.Weight, error) {
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("upload %s: sparse weights must be matrices", t.Name)
	}
	out, in := t.Shape[0], t.Shape[1]
	dt, data := t.DType, t.Data
	if dt == model.Q8_0 && out%model.Q8Block != 0 {
		w, err := t.Float32()
		if err != nil {
			return nil, err
		}
		if data, err = model.Encode(w, model.F16); err != nil {
			return nil, fmt.Errorf("upload %s: %w", t.Name, err)
		}
		dt = model.F16
	}
	m, err := gather.NewMatrix(dt, out, in, data)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", t.Name, err)
	}
	t.Release() // the transposed copy is the one the products read
	return &TMat{m}, nil
}

// stats counts kept and seen inputs per site. It also holds the buffer of
// kept inputs that SparseMatMul reuses from call to call.
type stats struct {
	mu         sync.Mutex
	kept, seen []int64
	idx        []int32
}

func (s *stats) add(id int, kept, seen int) {
	if id < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id >= len(s.kept) {
		s.kept = append(s.kept, make([]int64, id+1-len(s.kept))...)
		s.seen = append(s.seen, make([]int64, id+1-len(s.seen))...)
	}
	s.kept[id] += int64(kept)
	s.seen[id] += int64(seen)
}

// SparseStats implements backend.Backend.
func (c *Backend) SparseStats() (kept, seen []int64) {
	c.stats.mu.Lock()
	defer c.stats.mu.Unlock()
	kept, seen = c.stats.kept, c.stats.seen
	c.stats.kept, c.stats.seen = nil, nil
	return kept, seen
}

// SparseMatMul is SparseMatMuls of one product. A site that keeps every input
// runs all rows as one dense product through the transposed weights;
// otherwise each row selects its inputs and gathers their weight rows.
func (c *Backend) SparseMatMul(dst backend.Buffer, w backend.Weight, x backend.Buffer, rows int, s backend.Budget) {
	m := w.(*TMat).M
	xs, ds := d(x), d(dst)
	if s.Dense(m.In) {
		c.stats.add(s.ID, rows*m.In, rows*m.In)
		gather.Dense(ds, m, xs, rows)
		return
	}
	for r := range rows {
		xr := xs[r*m.In : (r+1)*m.In]
		c.stats.idx = Select(c.stats.idx[:0], xr, s)
		c.stats.add(s.ID, len(c.stats.idx), m.In)
		gather.Gather(ds[r*m.Out:(r+1)*m.Out], m, xr, c.stats.idx)
	}
}

// SparseMatMuls implements backend.Backend: one projection after another.
func (c *Backend) SparseMatMuls(x backend.Buffer, rows int, ps []backend.Proj) {
	for _, p := range ps {
		dst := c.sum(p, rows)
		c.SparseMatMul(dst, p.W, x, rows, p.Budget)
		c.added(p, dst, rows)
	}
}

// Select appends to idx the inputs of x that site s keeps, in increasing
// order: the K of largest score (ties broken toward lower index) or those
// with score > Threshold; every input when s.Dense(len(x)). The score is
// |x_j|, or |x_j|·s.Scale[j] when the site has a Scale.
func Select(idx []int32, x []float32, s backend.Budget) []int32 {
	switch {
	case s.Dense(len(x)):
		return gather.TopK(idx, x, len(x))
	case s.Scale != nil && s.TopK:
		return gather.TopKScaled(idx, x, s.Scale, s.K)
	case s.Scale != nil:
		return gather.ThresholdScaled(idx, x, s.Scale, s.Threshold)
	case s.TopK:
		return gather.TopK(idx, x, s.K)
	}
	return gather.Threshold(idx, x, s.Threshold)
}
