package gather

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The pool: Threads()-1 long-lived worker goroutines help the calling
// goroutine. A call publishes a job; the caller and the workers take its
// chunks from an atomic counter until none is left, so a worker that wakes
// late, or is busy with another caller's job, just does less. (The same
// design as package matmul's pool; the two packages keep separate pools.)

// job is one parallel call: t.do(c) for every c < chunks. Jobs are
// recycled so that a product allocates nothing; refs counts the workers
// that were handed the job and may still touch it.
type job struct {
	t      task
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
		j.t.do(int(c))
		j.done.Add(1)
	}
}

var jobs = sync.Pool{New: func() any { return new(job) }}

var (
	threads atomic.Int64
	workers atomic.Pointer[[]chan *job] // len ≥ Threads()-1
	poolMu  sync.Mutex                  // serialises SetThreads
)

func init() { SetThreads(runtime.GOMAXPROCS(0)) }

// Threads is the number of threads the products use (default GOMAXPROCS).
func Threads() int { return int(threads.Load()) }

// SetThreads sets the number of threads the products use; n < 1 means 1.
// Workers, once started, stay for the life of the process.
func SetThreads(n int) {
	n = max(n, 1)
	poolMu.Lock()
	defer poolMu.Unlock()
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
// parks: a decode step issues its products microseconds apart, and waking
// a parked goroutine takes about as long as a small product.
const spinFor = 50 * time.Microsecond

func worker(ch chan *job) {
	for {
		var j *job
		for start := time.Now(); j == nil && time.Since(start) < spinFor; {
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

// parallel runs t.do(c) for every c < chunks on up to Threads() threads,
// the caller's included, and returns when all are done.
func parallel(chunks int, t task) {
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
		j.t = task{}
		jobs.Put(j)
	}
}
