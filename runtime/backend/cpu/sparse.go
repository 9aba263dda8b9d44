package cpu

import (
	"fmt"
	"math"
	"sync"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// TMat is a projection stored input-channel-major: row j holds the d_out
// weights that input j meets, widened to float32.
type TMat struct {
	In, Out int
	D       []float32
}

// Shape implements backend.Weight: the model's (out, in).
func (t *TMat) Shape() []int { return []int{t.Out, t.In} }

// UploadSparse implements backend.Backend.
func (*Backend) UploadSparse(t *model.Tensor) (backend.Weight, error) {
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("upload %s: sparse weights must be matrices", t.Name)
	}
	w, err := t.Float32()
	if err != nil {
		return nil, err
	}
	out, in := t.Shape[0], t.Shape[1]
	tm := &TMat{In: in, Out: out, D: make([]float32, in*out)}
	for o := range out {
		for i := range in {
			tm.D[i*out+o] = w[o*in+i]
		}
	}
	return tm, nil
}

// stats counts kept and seen inputs per site.
type stats struct {
	mu         sync.Mutex
	kept, seen []int64
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

// SparseMatMul implements backend.Backend.
func (c *Backend) SparseMatMul(dst backend.Buffer, w backend.Weight, x backend.Buffer, rows int, s backend.Site) {
	t := w.(*TMat)
	xs, ds := d(x), d(dst)
	idx := make([]int32, 0, t.In)
	for r := range rows {
		xr := xs[r*t.In : (r+1)*t.In]
		idx = Select(idx[:0], xr, s)
		c.stats.add(s.ID, len(idx), t.In)
		gather(ds[r*t.Out:(r+1)*t.Out], t, xr, idx)
	}
}

// gather computes y = Σ_{j∈idx} x[j]·T[j,:].
func gather(y []float32, t *TMat, x []float32, idx []int32) {
	clear(y)
	for _, j := range idx {
		a := x[j]
		row := t.D[int(j)*t.Out : (int(j)+1)*t.Out]
		for o, w := range row {
			y[o] += a * w
		}
	}
}

// Select appends to idx the inputs of x that site s keeps, in increasing
// order: the K of largest |x| (ties broken toward lower index) or those
// with |x| > Threshold.
func Select(idx []int32, x []float32, s backend.Site) []int32 {
	n := len(x)
	if s.Dense(n) {
		for j := range n {
			idx = append(idx, int32(j))
		}
		return idx
	}
	if !s.TopK {
		for j, v := range x {
			if abs(v) > s.Threshold {
				idx = append(idx, int32(j))
			}
		}
		return idx
	}
	// The K-th largest magnitude by quickselect on a copy, then one pass
	// that keeps everything above it and the first ties up to K.
	mags := make([]float32, n)
	for j, v := range x {
		mags[j] = abs(v)
	}
	kth := quickselect(mags, n-s.K) // mags[n-K] after partition: the K-th largest
	above := 0
	for _, v := range x {
		if abs(v) > kth {
			above++
		}
	}
	ties := s.K - above
	for j, v := range x {
		a := abs(v)
		if a > kth || (a == kth && ties > 0) {
			if a == kth {
				ties--
			}
			idx = append(idx, int32(j))
		}
	}
	return idx
}

func abs(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// quickselect returns the value that would sit at index k of a sorted a,
// reordering a.
func quickselect(a []float32, k int) float32 {
	lo, hi := 0, len(a)-1
	for lo < hi {
		p := a[lo+(hi-lo)/2]
		i, j := lo, hi
		for i <= j {
			for a[i] < p {
				i++
			}
			for a[j] > p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return a[k]
		}
	}
	return a[k]
}
