package matmul

import (
	"runtime"
	"time"
)

// MemReadBandwidth measures the memory read bandwidth in bytes/s: it sums
// a fresh buffer of the given size (512 MiB is a good choice: far beyond
// any cache) on Threads() threads of the MatMul pool, several passes, and
// returns the best pass.
func MemReadBandwidth(bytes int) float64 {
	const chunk = 256 << 10 // floats a task
	n := max(bytes/4/chunk, 1) * chunk
	buf := make([]float32, n)
	for i := range buf { // written, so its pages are real memory, not the zero page
		buf[i] = 1
	}
	sums := make([]float64, n/chunk)
	var best float64
	for range 5 {
		start := time.Now()
		parallel(len(sums), func(c int) { sums[c] = sum(buf[c*chunk : (c+1)*chunk]) })
		best = max(best, float64(4*n)/time.Since(start).Seconds())
	}
	runtime.KeepAlive(sums)
	return best
}
