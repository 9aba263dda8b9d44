package gather

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/cputest"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/matmul"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Decode is memory-bound only if the weights come from memory, so the
// benchmarks cut their matrices from cputest.WeightBuffer (far beyond the
// last-level cache) and move to the next window on every call.
//
// BenchmarkGather/<dtype>/<out>x<in>/s=<sparsity> times Gather with a
// fraction 1−s of the inputs kept (s=0: Dense through the same transposed
// layout); rowmajor is matmul.MatMul on the same bytes read as a row-major
// matrix, the dense decode product this package competes with. GB/s counts
// the weight bytes actually read, over the median call. speedup is the
// median row-major time over the median gather time, the two timed call by
// call in turn, and %ideal compares it with 1/(1−s).

// windows returns as many distinct out×in matrices of type d as fit in the
// weight buffer, both transposed (for this package) and row-major (for
// matmul).
func windows(b *testing.B, d model.DType, out, in int) ([]*Matrix, []*matmul.Matrix) {
	size := d.Bytes(out * in)
	buf := cputest.WeightBuffer()
	var ts []*Matrix
	var rs []*matmul.Matrix
	for off := 0; off+size <= len(buf); off += size {
		w := buf[off : off+size]
		ts = append(ts, &Matrix{DType: d, In: in, Out: out, t: w, rowBytes: d.Bytes(out)})
		r, err := matmul.NewMatrix(d, out, in, w)
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	return ts, rs
}

// median is the middle of ds, which it sorts: calls slowed by other load
// on a shared machine move the mean but not the median.
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func BenchmarkGather(b *testing.B) {
	shapes := [][2]int{{4096, 4096}, {11008, 4096}, {4096, 11008}}
	for _, d := range []model.DType{model.F32, model.BF16} {
		for _, s := range shapes {
			out, in := s[0], s[1]
			name := fmt.Sprintf("%s/%dx%d", d, out, in)
			rng := rand.New(rand.NewPCG(uint64(out), uint64(in)))
			x := cputest.RandVec(rng, in)
			dst := make([]float32, out)
			b.Run(name+"/rowmajor", func(b *testing.B) {
				_, rs := windows(b, d, out, in)
				ds := make([]time.Duration, b.N)
				for i := range b.N {
					ds[i] = timed(func() { matmul.MatMul(dst, rs[i%len(rs)], x, 1) })
				}
				b.ReportMetric(float64(d.Bytes(out*in))/median(ds).Seconds()/1e9, "GB/s")
			})
			for _, sp := range []float64{0, 0.5, 0.7, 0.8, 0.9} {
				b.Run(fmt.Sprintf("%s/s=%g", name, sp), func(b *testing.B) {
					ts, rs := windows(b, d, out, in)
					k := int(float64(in)*(1-sp) + 0.5)
					idx := TopK(nil, cputest.RandVec(rng, in), k) // a random kept set
					// Each call is timed next to a row-major product on
					// another window, so both see the same machine load.
					ds, rows := make([]time.Duration, b.N), make([]time.Duration, b.N)
					for i := range b.N {
						m := ts[i%len(ts)]
						if sp == 0 {
							ds[i] = timed(func() { Dense(dst, m, x, 1) })
						} else {
							ds[i] = timed(func() { Gather(dst, m, x, idx) })
						}
						b.StopTimer()
						rows[i] = timed(func() { matmul.MatMul(dst, rs[(i+1)%len(rs)], x, 1) })
						b.StartTimer()
					}
					per := median(ds)
					b.ReportMetric(float64(d.Bytes(out*k))/per.Seconds()/1e9, "GB/s")
					speedup := float64(median(rows)) / float64(per)
					b.ReportMetric(speedup, "speedup")
					b.ReportMetric(100*speedup*(1-sp), "%ideal")
				})
			}
		}
	}
}

// BenchmarkTopK selects 20% of a decode activation (110M and 7B widths).
func BenchmarkTopK(b *testing.B) {
	for _, n := range []int{768, 2048, 4096, 11008} {
		x := cputest.RandVec(rand.New(rand.NewPCG(1, uint64(n))), n)
		idx := make([]int32, 0, n)
		b.Run(fmt.Sprintf("topk/%d", n), func(b *testing.B) {
			for range b.N {
				idx = TopK(idx[:0], x, n/5)
			}
		})
		b.Run(fmt.Sprintf("threshold/%d", n), func(b *testing.B) {
			for range b.N {
				idx = Threshold(idx[:0], x, 1.28) // about 20% of a normal
			}
		})
		scale := make([]float32, n)
		for j := range scale {
			scale[j] = 0.5 + float32(j%7)/7
		}
		b.Run(fmt.Sprintf("topk-scaled/%d", n), func(b *testing.B) {
			for range b.N {
				idx = TopKScaled(idx[:0], x, scale, n/5)
			}
		})
		b.Run(fmt.Sprintf("threshold-scaled/%d", n), func(b *testing.B) {
			for range b.N {
				idx = ThresholdScaled(idx[:0], x, scale, 1.28)
			}
		})
	}
}

// BenchmarkNewMatrix transposes a down projection as a model load does.
func BenchmarkNewMatrix(b *testing.B) {
	for _, d := range []model.DType{model.BF16, model.Q8_0} {
		b.Run(d.String(), func(b *testing.B) {
			data := cputest.WeightBuffer()[:d.Bytes(4096*11008)]
			for range b.N {
				if _, err := NewMatrix(d, 4096, 11008, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
