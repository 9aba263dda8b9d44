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
	// positions is the most the sequence can reach (prompt + max_tokens,
	// at most the context), need the bytes of a state that holds them.
	positions int
	need      int64
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

func newJob(ctx context.Context, variant int, prompt []int, o sample.Options, maxTokens, logprobs, positions int, need int64) *job {
	return &job{ctx: ctx, variant: variant, prompt: prompt, sample: o, maxTokens: maxTokens, logprobs: logprobs,
		positions: positions, need: need, out: outbox{ready: make(chan struct{}, 1)}}
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

// pop returns the oldest job whose request is still live if fits says it
// may start, else nil (it waits: no later job overtakes it), discarding
// cancelled ones.
func (q *queue) pop(fits func(*job) bool) *job {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.jobs) > 0 {
		j := q.jobs[0]
		if j.ctx.Err() == nil && !fits(j) {
			return nil
		}
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
	s      *Server
	m      *engine.Model
	batch  *engine.Batch
	logits []float32
	active []*job // ordered by variant, so that a plan's rows are one run of a step
	// reserved is the bytes the active jobs' states may grow to (their
	// need), at most the server's MaxMemory.
	reserved int64
	states   []*engine.State
	tokens   []int
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
			j := s.queue.pop(func(j *job) bool { return sc.reserved+j.need <= s.cfg.MaxMemory })
			if j == nil {
				break
			}
			sc.admit(j)
		}
		s.metrics.setMemory(sc.reserved)
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

// admit reserves j's state, prefills its prompt densely and emits its
// first token.
func (sc *scheduler) admit(j *job) {
	st := sc.m.NewState(j.positions, prefillRows)
	sc.reserved += j.need
	st.Budgets, st.SparseFrom = sc.s.variants[j.variant].budgets, len(j.prompt)
	j.state = st
	V := sc.m.Config.VocabSize
	if err := st.Forward(j.prompt, sc.logits[:V], false); err != nil {
		sc.noteFault()
		sc.finish(j, event{err: fmt.Errorf("prefill: %w", err)})
		return
	}
	sc.s.metrics.addPrompt(len(j.prompt))
	j.smp = sample.New(j.sample)
	if sc.emit(j, j.smp.Next(sc.logits[:V]), sc.logits[:V]) {
		// after the running jobs of its variant and those before it
		at, _ := slices.BinarySearchFunc(sc.active, j.variant+1, func(a *job, v int) int { return a.variant - v })
		sc.active = slices.Insert(sc.active, at, j)
	}
}

// tick runs one decode step over every active job, each row under its
// variant's budgets.
func (sc *scheduler) tick() {
	V := sc.m.Config.VocabSize
	sc.states, sc.tokens = sc.states[:0], sc.tokens[:0]
	for _, j := range sc.active {
		sc.states = append(sc.states, j.state)
		sc.tokens = append(sc.tokens, j.next)
	}
	t0 := time.Now()
	logits := sc.logits
	if sc.picker != nil && slices.ContainsFunc(sc.active, func(j *job) bool { return !j.hostPick() }) {
		logits = nil // picked on the device; rows read only for jobs that pick on the host
	}
	if err := sc.batch.Step(sc.states, sc.tokens, logits); err != nil {
		sc.noteFault()
		sc.s.log.Error("decode step", "err", err)
		for _, j := range sc.active {
			sc.finish(j, event{err: fmt.Errorf("decode: %w", err)})
		}
		clear(sc.active)
		sc.active = sc.active[:0]
		return
	}
	sc.s.metrics.step(len(sc.active), time.Since(t0))
	sc.countRealized()
	var picked []int
	if logits == nil {
		picked = sc.pick()
	}
	live := sc.active[:0]
	for i, j := range sc.active {
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
	clear(sc.active[len(live):])
	sc.active = live
}

// noteFault records the backend's sticky device error, if a failed pass
// met one, for /healthz.
func (sc *scheduler) noteFault() {
	if err := sc.m.Backend.Err(); err != nil && sc.s.fault.Load() == nil {
		sc.s.log.Error("device fault: every request from now on fails", "err", err)
		sc.s.fault.Store(&err)
	}
}

// countRealized records, for each plan with rows in the step just run,
// the sparsity its rows realized (the variants count under IDs of their
// own: resolvePlans).
func (sc *scheduler) countRealized() {
	if len(sc.s.variants) == 1 {
		return
	}
	kept, seen := sc.m.Backend.SparseStats()
	for lo := 0; lo < len(sc.active); {
		v := sc.active[lo].variant
		hi := lo + 1
		for hi < len(sc.active) && sc.active[hi].variant == v {
			hi++
		}
		if vr := sc.s.variants[v]; vr.budgets != nil {
			if _, w := sc.m.RealizedOf(kept, seen, vr.budgets.Sites[0].ID); !math.IsNaN(w) {
				sc.s.metrics.realized(v, hi-lo, w)
			}
		}
		lo = hi
	}
}

// pick chooses on the device the tokens of the active jobs' plain rows
// (greedy or temperature: sample.Options.Plain) of the step just run, each
// with the next variate of its job's own stream (as Sampler.Next would
// use); other rows get a greedy pick that is not used.
func (sc *scheduler) pick() []int {
	sc.temps, sc.us = sc.temps[:0], sc.us[:0]
	for _, j := range sc.active {
		t, u := float32(0), float32(0)
		if !j.hostPick() && j.sample.Temperature > 0 {
			t, u = float32(j.sample.Temperature), float32(j.smp.Uniform())
		}
		sc.temps, sc.us = append(sc.temps, t), append(sc.us, u)
	}
	return sc.picker.Pick(sc.batch.Logits(), len(sc.active), sc.m.Config.VocabSize, sc.temps, sc.us)
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

// release frees j's state and its reservation.
func (sc *scheduler) release(j *job) {
	if j.state != nil {
		j.state.Close()
		sc.reserved -= j.need
		j.state = nil
	}
}
