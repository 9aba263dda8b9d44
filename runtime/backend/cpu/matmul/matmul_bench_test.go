package matmul

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/cputest"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Decode is memory-bound only if the weights come from memory: a 110M
// f32 model is 440 MB, far beyond the last-level cache, while one 768×768
// matrix fits in it. So the benchmarks cut their matrices from
// cputest.WeightBuffer and move to the next window on every call; small
// shapes therefore read each window once per ~200 calls, as decode does
// once per token.

// readWindow is the read bandwidth of one pass over m.Data, as
// MemReadBandwidth measures it.
func readWindow(m *Matrix) float64 {
	return readBandwidth(unsafe.Slice((*float32)(unsafe.Pointer(&m.Data[0])), len(m.Data)/4), 1)
}

// windows returns as many distinct rows×cols matrices of type d as fit in
// the weight buffer (all of it, so that they cycle through memory, not cache).
func windows(b *testing.B, d model.DType, rows, cols int) []*Matrix {
	size := d.Bytes(rows * cols)
	buf := cputest.WeightBuffer()
	var ms []*Matrix
	for off := 0; off+size <= len(buf); off += size {
		m, err := NewMatrix(d, rows, cols, buf[off:off+size])
		if err != nil {
			b.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

var benchShapes = [][2]int{{768, 768}, {2048, 768}, {768, 2048}, {32000, 768}, {4096, 4096}, {11008, 4096}}

func BenchmarkMemRead(b *testing.B) {
	var bw float64
	for range b.N {
		bw = MemReadBandwidth(512 << 20)
	}
	b.ReportMetric(bw/1e9, "GB/s")
}

// BenchmarkMatVec is the decode product (n = 1). GB/s counts weight bytes
// read, on average and in the fastest call (each call reads a window not in
// cache). read-GB/s is the fastest plain parallel read of as many other
// windows, one at a time, right after; %read compares the two fastest, so
// that other load on a shared machine, which stretches some calls, skews
// both alike.
func BenchmarkMatVec(b *testing.B) {
	for _, d := range cputest.DTypes {
		for _, s := range benchShapes {
			next := 0 // the window to read next, kept across b.N rounds so none starts warm
			b.Run(fmt.Sprintf("%s/%dx%d", strings.ToLower(d.String()), s[0], s[1]), func(b *testing.B) {
				ms := windows(b, d, s[0], s[1])
				x, dst := make([]float32, s[1]), make([]float32, s[0])
				for i := range x {
					x[i] = 1
				}
				bytes := float64(len(ms[0].Data))
				best := time.Duration(math.MaxInt64)
				b.ResetTimer()
				for range b.N {
					start := time.Now()
					MatMul(dst, ms[next%len(ms)], x, 1)
					best = min(best, time.Since(start))
					next++
				}
				b.StopTimer()
				var read float64
				for range b.N {
					read = max(read, readWindow(ms[next%len(ms)]))
					next++
				}
				b.ReportMetric(bytes*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
				b.ReportMetric(bytes/best.Seconds()/1e9, "best-GB/s")
				b.ReportMetric(read/1e9, "read-GB/s")
				b.ReportMetric(100*bytes/best.Seconds()/read, "%read")
			})
		}
	}
}

// BenchmarkMatVecSmall is decode of a stories260K-sized layer, which stays
// in cache: it measures call and dispatch overhead.
func BenchmarkMatVecSmall(b *testing.B) {
	m, err := NewMatrix(model.F32, 64, 64, cputest.WeightBuffer()[:64*64*4])
	if err != nil {
		b.Fatal(err)
	}
	x, dst := make([]float32, 64), make([]float32, 64)
	for range b.N {
		MatMul(dst, m, x, 1)
	}
}

// BenchmarkMatMul is prefill: 64 activation rows at once, reported in
// GFLOP/s (2 flops a weight a row).
func BenchmarkMatMul(b *testing.B) {
	const n = 64
	for _, d := range cputest.DTypes {
		for _, s := range [][2]int{{768, 768}, {2048, 768}, {4096, 4096}} {
			b.Run(fmt.Sprintf("%s/%dx%d/n=%d", strings.ToLower(d.String()), s[0], s[1], n), func(b *testing.B) {
				ms := windows(b, d, s[0], s[1])
				x, dst := make([]float32, n*s[1]), make([]float32, n*s[0])
				for i := range x {
					x[i] = 1
				}
				b.ResetTimer()
				for i := range b.N {
					MatMul(dst, ms[i%len(ms)], x, n)
				}
				flops := 2 * float64(s[0]*s[1]*n) * float64(b.N)
				b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
