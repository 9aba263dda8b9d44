// Package pool shares the CPU cores among the CPU kernels (packages matmul
// and gather): one set of Threads()-1 long-lived worker goroutines for the
// whole process helps whichever goroutine calls Run.
//
// Run publishes a job of numbered chunks; the caller and the workers take
// chunks from an atomic counter until none is left, so the caller always
// makes progress on its own. A worker that wakes late, or is busy with
// another caller's job, simply does less: the others (and the caller) cover
// its share. Idle workers spin for spinFor before they park, because a
// decode step issues its products microseconds apart and waking a parked
// goroutine takes about as long as a small product.
package pool

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Task is the work of one Run call, split into chunks. Do(c) is called
// exactly once for every chunk c < chunks, from any goroutine, and possibly
// for several chunks at once; no call happens after Run returns.
type Task interface{ Do(chunk int) }

// Func adapts a function to Task. Run then allocates whatever its closure
// captures; a caller that must not allocate passes a pointer to a task it
// reuses instead.
type Func func(chunk int)

// Do calls f(chunk).
func (f Func) Do(chunk int) { f(chunk) }

// job is one Run call. Jobs are recycled so that Run allocates nothing;
// refs counts the workers that were handed the job and may still touch it.
type job struct {
	t      Task
	chunks int64
	next   atomic.Int64 // next chunk to take
	done   atomic.Int64 // chunks finished
	refs   atomic.Int64
}

func (j *job) work() {
	for {
		c := j.next.Add(1) - 1
		if c >= j.chunks {
			return
		}
		j.t.Do(int(c))
		j.done.Add(1)
	}
}

var jobs = sync.Pool{New: func() any { return new(job) }}

var (
	threads atomic.Int64
	workers atomic.Pointer[[]chan *job] // len ≥ Threads()-1
	mu      sync.Mutex                  // serialises SetThreads
)

func init() { SetThreads(runtime.GOMAXPROCS(0)) }

// Threads is the number of threads Run uses, the caller's included
// (default GOMAXPROCS).
func Threads() int { return int(threads.Load()) }

// SetThreads sets the number of threads Run uses; n < 1 means 1. Workers,
// once started, stay for the life of the process; lowering n only leaves
// the extra ones parked.
func SetThreads(n int) {
	n = max(n, 1)
	mu.Lock()
	defer mu.Unlock()
	var ws []chan *job
	if p := workers.Load(); p != nil {
		ws = *p
	}
	for len(ws) < n-1 {
		ch := make(chan *job, 1)
		go worker(ch)
		ws = append(ws, ch)
	}
	workers.Store(&ws)
	threads.Store(int64(n))
}

// spinFor is how long an idle worker polls for the next job before it
// parks (see the package comment).
const spinFor = 50 * time.Microsecond

func worker(ch chan *job) {
	for {
		var j *job
		for start := time.Now(); j == nil && time.Since(start) < spinFor; {
			for range 64 { // poll without the channel's lock first
				if len(ch) > 0 {
					break
				}
			}
			select {
			case j = <-ch:
			default:
			}
		}
		if j == nil {
			j = <-ch
		}
		j.work()
		j.refs.Add(-1)
	}
}

// Run calls t.Do(c) for every c < chunks on up to Threads() threads, the
// caller's included, and returns when all are done. It allocates nothing
// itself; t may be used again once Run returns.
func Run(chunks int, t Task) {
	j := jobs.Get().(*job)
	j.t, j.chunks = t, int64(chunks)
	j.next.Store(0)
	j.done.Store(0)
	helpers := min(Threads(), chunks) - 1
	for _, ch := range (*workers.Load())[:max(helpers, 0)] {
		j.refs.Add(1)
		select {
		case ch <- j:
		default: // busy with another job; the others cover its share
			j.refs.Add(-1)
		}
	}
	j.work()
	for j.done.Load() < j.chunks {
		runtime.Gosched()
	}
	if j.refs.Load() == 0 { // else a late worker still holds it: leave it to the GC
		j.t = nil
		jobs.Put(j)
	}
}
