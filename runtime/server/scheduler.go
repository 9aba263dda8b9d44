package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

// prefillRows is the longest prompt chunk one pass of prefill runs.
const prefillRows = 64

// job is one generation request. The handler fills the first fields and
// then only reads events; the scheduler owns the rest.
type job struct {
	ctx       context.Context // the request's; cancelled: drop the job
	variant   int
	prompt    []int
	sample    sample.Options
	maxTokens int
	logprobs  int // alternatives to report beside each token; -1: none
	// out gets each generated token, then one final event, unless the job
	// is dropped.
	out outbox

	state     *engine.State
	smp       *sample.Sampler
	next      int // the token the next step feeds
	generated int
}

// event is a generated token, or the end of a job (done) with why it ended.
type event struct {
	token  int
	lp     *tokenLogprob // when the job asked for logprobs
	done   bool
	reason string // done: "stop" (end token) or "length"
	err    error  // done: the engine failed
}

func newJob(ctx context.Context, variant int, prompt []int, o sample.Options, maxTokens, logprobs int) *job {
	return &job{ctx: ctx, variant: variant, prompt: prompt, sample: o, maxTokens: maxTokens, logprobs: logprobs,
		out: outbox{ready: make(chan struct{}, 1)}}
}

// hostPick reports whether j's tokens are picked from logits read to the
// host: truncated sampling, or logprobs, need the row there.
func (j *job) hostPick() bool { return !j.sample.Plain() || j.logprobs >= 0 }

// outbox passes a job's events from the scheduler to its handler. put
// never blocks, so a slow client cannot stall the scheduler, and it holds
// only the events not yet taken: memory grows with what was generated and
// not yet sent, not with max_tokens.
type outbox struct {
	mu    sync.Mutex
	evs   []event
	ready chan struct{} // a token when evs became non-empty
}

func (o *outbox) put(ev event) {
	o.mu.Lock()
	o.evs = append(o.evs, ev)
	o.mu.Unlock()
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// take moves the waiting events into buf (emptied first) and returns it.
func (o *outbox) take(buf []event) []event {
	o.mu.Lock()
	defer o.mu.Unlock()
	buf, o.evs = append(buf[:0], o.evs...), o.evs[:0]
	return buf
}

// queue holds jobs waiting for a slot, first come first served.
type queue struct {
	mu     sync.Mutex
	jobs   []*job
	max    int
	closed bool
	wake   chan struct{} // a token when a job arrives
}

func newQueue(max int) *queue { return &queue{max: max, wake: make(chan struct{}, 1)} }

// errQueueFull and errClosed are push's refusals.
var (
	errQueueFull = errors.New("queue full")
	errClosed    = errors.New("shutting down")
)

func (q *queue) push(j *job) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return errClosed
	case len(q.jobs) >= q.max:
		return errQueueFull
	}
	q.jobs = append(q.jobs, j)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// pop returns the oldest job whose request is still live, or nil,
// discarding cancelled ones.
func (q *queue) pop() *job {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.jobs) > 0 {
		j := q.jobs[0]
		q.jobs[0] = nil
		q.jobs = q.jobs[1:]
		if j.ctx.Err() == nil {
			return j
		}
	}
	return nil
}

// prune discards waiting jobs whose request was cancelled.
func (q *queue) prune() {
	q.mu.Lock()
	defer q.mu.Unlock()
	live := q.jobs[:0]
	for _, j := range q.jobs {
		if j.ctx.Err() == nil {
			live = append(live, j)
		}
	}
	clear(q.jobs[len(live):])
	q.jobs = live
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs)
}

func (q *queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// scheduler is the one goroutine that runs the model.
type scheduler struct {
	s       *Server
	m       *engine.Model
	batch   *engine.Batch
	logits  []float32
	pool    []*engine.State
	active  []*job
	applied int // the variant whose sites are installed
	group   []*job
	states  []*engine.State
	tokens  []int
	// picker picks tokens on the device (nil: the backend cannot); temps
	// and us are its per-row arguments.
	picker    backend.Picker
	temps, us []float32
}

func newScheduler(s *Server) *scheduler {
	m := s.cfg.Model
	sc := &scheduler{s: s, m: m, batch: m.NewBatch(s.cfg.MaxBatch),
		logits: make([]float32, s.cfg.MaxBatch*m.Config.VocabSize)}
	sc.picker, _ = m.Backend.(backend.Picker)
	return sc
}

// run is the scheduler loop; it returns after Shutdown once no job is
// left.
func (sc *scheduler) run() {
	s := sc.s
	defer close(s.done)
	for {
		sc.dropCancelled()
		s.queue.prune()
		for len(sc.active) < s.cfg.MaxBatch {
			j := s.queue.pop()
			if j == nil {
				break
			}
			sc.admit(j)
		}
		s.metrics.setActive(len(sc.active))
		if len(sc.active) == 0 {
			// Nothing runs, so the queue is empty: wait for a job.
			select {
			case <-s.queue.wake:
			case <-s.stop:
				if s.queue.len() == 0 {
					return
				}
			}
			continue
		}
		if s.cfg.beforeStep != nil {
			s.cfg.beforeStep()
		}
		sc.tick()
	}
}

// dropCancelled frees the slots of jobs whose request was cancelled.
func (sc *scheduler) dropCancelled() {
	live := sc.active[:0]
	for _, j := range sc.active {
		if j.ctx.Err() != nil {
			sc.release(j)
			continue
		}
		live = append(live, j)
	}
	clear(sc.active[len(live):])
	sc.active = live
}

// admit prefills j's prompt densely and emits its first token.
func (sc *scheduler) admit(j *job) {
	var st *engine.State
	if n := len(sc.pool); n > 0 {
		st, sc.pool = sc.pool[n-1], sc.pool[:n-1]
		st.Reset()
	} else {
		st = sc.m.NewState(sc.s.ctx, prefillRows)
	}
	st.SparseFrom = len(j.prompt)
	j.state = st
	sc.apply(j.variant)
	V := sc.m.Config.VocabSize
	if err := st.Forward(j.prompt, sc.logits[:V], false); err != nil {
		sc.finish(j, event{err: fmt.Errorf("prefill: %w", err)})
		return
	}
	sc.s.metrics.addPrompt(len(j.prompt))
	j.smp = sample.New(j.sample)
	if sc.emit(j, j.smp.Next(sc.logits[:V]), sc.logits[:V]) {
		sc.active = append(sc.active, j)
	}
}

// tick runs one decode step for each plan group of the active jobs.
func (sc *scheduler) tick() {
	V := sc.m.Config.VocabSize
	live := sc.active[:0]
	for v := range sc.s.variants {
		sc.group, sc.states, sc.tokens = sc.group[:0], sc.states[:0], sc.tokens[:0]
		for _, j := range sc.active {
			if j.variant == v {
				sc.group = append(sc.group, j)
				sc.states = append(sc.states, j.state)
				sc.tokens = append(sc.tokens, j.next)
			}
		}
		if len(sc.group) == 0 {
			continue
		}
		sc.apply(v)
		t0 := time.Now()
		logits := sc.logits
		if sc.picker != nil && slices.ContainsFunc(sc.group, func(j *job) bool { return !j.hostPick() }) {
			logits = nil // picked on the device; rows read only for jobs that pick on the host
		}
		dense, err := sc.batch.Step(sc.states, sc.tokens, logits)
		if err != nil {
			sc.s.log.Error("decode step", "model", sc.s.variants[v].name, "err", err)
			for _, j := range sc.group {
				sc.finish(j, event{err: fmt.Errorf("decode: %w", err)})
			}
			continue
		}
		realized := -1.0
		if sc.s.variants[v].sites != nil {
			if _, w := sc.m.Realized(); !math.IsNaN(w) {
				realized = w
			}
		}
		sc.s.metrics.step(v, len(sc.group), time.Since(t0), dense, realized)
		var picked []int
		if logits == nil {
			picked = sc.pick()
		}
		for i, j := range sc.group {
			var tok int
			var row []float32 // the host's copy of the logits, if any
			switch {
			case logits != nil:
				row = sc.logits[i*V : (i+1)*V]
				tok = j.smp.Next(row)
			case !j.hostPick():
				tok = picked[i]
			default: // top-k, top-p or logprobs: this row's logits, on the host
				row = sc.logits[:V]
				sc.m.Backend.Read(row, sc.batch.Logits(), i*V)
				tok = j.smp.Next(row)
			}
			if sc.emit(j, tok, row) {
				live = append(live, j)
			}
		}
	}
	clear(sc.active[len(live):])
	sc.active = live
}

// pick chooses on the device the tokens of the group's plain rows
// (greedy or temperature: sample.Options.Plain) of the step just run, each
// with the next variate of its job's own stream (as Sampler.Next would
// use); other rows get a greedy pick that is not used.
func (sc *scheduler) pick() []int {
	sc.temps, sc.us = sc.temps[:0], sc.us[:0]
	for _, j := range sc.group {
		t, u := float32(0), float32(0)
		if !j.hostPick() && j.sample.Temperature > 0 {
			t, u = float32(j.sample.Temperature), float32(j.smp.Uniform())
		}
		sc.temps, sc.us = append(sc.temps, t), append(sc.us, u)
	}
	return sc.picker.Pick(sc.batch.Logits(), len(sc.group), sc.m.Config.VocabSize, sc.temps, sc.us)
}

// apply installs variant v's sites unless they are in force.
func (sc *scheduler) apply(v int) {
	if v == sc.applied {
		return
	}
	if err := sc.m.SetSites(sc.s.variants[v].sites); err != nil {
		panic(err) // New checked that the model takes plans
	}
	sc.applied = v
}

// emit delivers token tok of j, picked from row (the logits on the host,
// nil when picked on the device), and reports whether j goes on.
func (sc *scheduler) emit(j *job, tok int, row []float32) bool {
	if sc.s.cfg.Tokenizer.IsEnd(tok) {
		sc.finish(j, event{done: true, reason: "stop"})
		return false
	}
	j.generated++
	sc.s.metrics.addGenerated(1)
	ev := event{token: tok}
	if j.logprobs >= 0 {
		ev.lp = logprobsOf(row, tok, j.logprobs)
	}
	j.out.put(ev)
	if j.generated >= j.maxTokens || j.state.Pos >= j.state.Context() {
		sc.finish(j, event{done: true, reason: "length"})
		return false
	}
	j.next = tok
	return true
}

// finish sends j's final event and frees its state.
func (sc *scheduler) finish(j *job, ev event) {
	ev.done = true
	j.out.put(ev)
	sc.release(j)
}

func (sc *scheduler) release(j *job) {
	if j.state != nil {
		sc.pool = append(sc.pool, j.state)
		j.state = nil
	}
}
