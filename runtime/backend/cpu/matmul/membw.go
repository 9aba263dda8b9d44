package matmul

import (
	"runtime"
	"time"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/pool"
)

// MemReadBandwidth measures the memory read bandwidth in bytes/s: it sums
// a fresh buffer of the given size (512 MiB is a good choice: far beyond
// any cache) on Threads() threads of the shared pool, five passes, and
// returns the best pass.
func MemReadBandwidth(bytes int) float64 {
	buf := make([]float32, max(bytes/4, 1))
	for i := range buf { // written, so its pages are real memory, not the zero page
		buf[i] = 1
	}
	return readBandwidth(buf, 5)
}

// readBandwidth is the best of passes parallel sums of buf, in bytes/s.
// Each thread gets about eight tasks, as in MatMul.
func readBandwidth(buf []float32, passes int) float64 {
	chunk := max((len(buf)+8*Threads()-1)/(8*Threads()), 16<<10)
	sums := make([]float64, (len(buf)+chunk-1)/chunk)
	var best float64
	for range passes {
		start := time.Now()
		pool.Run(len(sums), pool.Func(func(c int) { sums[c] = sum(buf[c*chunk : min((c+1)*chunk, len(buf))]) }))
		best = max(best, float64(4*len(buf))/time.Since(start).Seconds())
	}
	runtime.KeepAlive(sums)
	return best
}
