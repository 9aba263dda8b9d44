package matmul

import (
	"fmt"
	"testing"
	"time"

	"github.com/acttail/acttail-gpu/runtime/model"
)

func TestExplore(t *testing.T) {
	for _, d := range []model.DType{model.F32, model.Q8_0} {
		for _, s := range [][2]int{{768, 768}, {4096, 4096}} {
			for _, th := range []int{1, 2} {
				withThreads(th, func() {
					var ms []*Matrix
					size := d.Bytes(s[0] * s[1])
					buf := weightPool()
					for off := 0; off+size <= len(buf); off += size {
						m, _ := NewMatrix(d, s[0], s[1], buf[off:off+size])
						ms = append(ms, m)
					}
					x, dst := make([]float32, s[1]), make([]float32, s[0])
					for i := range x {
						x[i] = 1
					}
					iters := min(len(ms), 60)
					best := 0.0
					k := 0
					for range 7 {
						start := time.Now()
						for range iters {
							MatMul(dst, ms[k%len(ms)], x, 1)
							k++
						}
						el := time.Since(start)
						best = max(best, float64(size*iters)/el.Seconds()/1e9)
					}
					fmt.Printf("%s %v th=%d: %.1f GB/s (pool %.1f)\n", d, s, th, best, poolBandwidth()/1e9)
				})
			}
		}
	}
}
