package pool_test

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/cputest"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/pool"
)

// counts records how often each chunk ran.
type counts []atomic.Int32

func (c counts) Do(chunk int) { c[chunk].Add(1) }

// check requires every chunk to have run exactly once.
func (c counts) check(t *testing.T) {
	t.Helper()
	for i := range c {
		if n := c[i].Load(); n != 1 {
			t.Fatalf("chunk %d of %d ran %d times", i, len(c), n)
		}
	}
}

func TestRun(t *testing.T) {
	for _, th := range []int{1, 2, 3, 8} {
		cputest.WithThreads(th, func() {
			for _, chunks := range []int{0, 1, 2, 5, 64, 1000} {
				c := make(counts, chunks)
				pool.Run(chunks, c)
				c.check(t)
			}
		})
	}
}

func TestSetThreads(t *testing.T) {
	cputest.WithThreads(0, func() {
		if got := pool.Threads(); got != 1 {
			t.Fatalf("SetThreads(0): Threads() = %d, want 1", got)
		}
	})
	cputest.WithThreads(5, func() {
		if got := pool.Threads(); got != 5 {
			t.Fatalf("SetThreads(5): Threads() = %d", got)
		}
	})
}

// Jobs from several goroutines at once, more than there are workers,
// each run every chunk exactly once: busy workers are covered by the rest.
func TestConcurrent(t *testing.T) {
	cputest.WithThreads(4, func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					c := make(counts, 1+i%17)
					pool.Run(len(c), c)
					c.check(t)
				}
			}()
		}
		wg.Wait()
	})
}

// A Func runs like any Task.
func TestFunc(t *testing.T) {
	c := make(counts, 37)
	cputest.WithThreads(3, func() { pool.Run(len(c), pool.Func(func(i int) { c.Do(i) })) })
	c.check(t)
}

// nop is a task whose pointer costs nothing to pass.
type nop struct{ sum atomic.Int64 }

func (n *nop) Do(c int) { n.sum.Add(int64(c)) }

// Run allocates nothing, so that decode does not feed the garbage collector.
func TestNoAllocs(t *testing.T) {
	if cputest.Race {
		t.Skip("sync.Pool drops items under the race detector")
	}
	var task nop
	cputest.WithThreads(2, func() {
		if a := testing.AllocsPerRun(100, func() { pool.Run(8, &task) }); a != 0 {
			t.Fatalf("%g allocations a call", a)
		}
	})
}

func BenchmarkRun(b *testing.B) {
	var task nop
	for range b.N {
		pool.Run(pool.Threads(), &task)
	}
}
