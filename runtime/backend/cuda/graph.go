package cuda

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"unsafe"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
)

// A decode step is some 10–15 launches a layer, each a few microseconds of
// host and device overhead for kernels that may run for less. Between
// BeginStep and EndStep the ops are recorded instead of queued; EndStep
// launches them as one CUDA graph.
//
// Static steps. The values that change from one decode step to the next
// (the token ids and the positions of RoPECache and Attention) go to the
// kernels through a small device array, the step variables, written before
// the graph runs, instead of as kernel arguments. So the next step of the
// same sequence queues exactly the same work, and EndStep finds that out
// with a dry run of the recorded ops (cudadrv.Ctx.BeginDry: every launch,
// argument byte and address hashed, nothing queued) and launches the graph
// it already has: no capture, no instantiation. A step whose hash is new
// (the first one, a new sequence's buffers, a grown scratch buffer) is
// captured and instantiated while fewer than maxGraphs graphs are kept, so
// that a server alternating sequences and batch sizes reuses rather than
// rebuilds; once they are all kept, the oldest of the same topology (the
// same kernels in the same order: the ops' tags) is updated in place
// (cuGraphExecUpdate), else the oldest is dropped.
//
// A step that copies host memory to the device (a budget written into
// c_sites for the first time, token ids past the maxStepVars step
// variables) runs op by op: a captured copy would read the host memory when the graph runs, not
// when it was recorded. So does every step when the driver has no stream
// capture or Options.NoGraphs is set. If a capture fails, the step's ops
// run op by op instead and the error is kept (GraphStats); after
// maxGraphFailures failures in a row graphs are switched off.

var _ backend.Stepper = (*Backend)(nil)

const (
	// maxGraphFailures is the failed captures in a row after which graphs
	// are switched off.
	maxGraphFailures = 3
	// maxGraphs is the executable graphs kept.
	maxGraphs = 8
	// maxStepVars is the step variables a step may use; past them the
	// values go as kernel arguments (the step is then captured anew).
	maxStepVars = 8192
)

// topoSeed seeds every step's topology hash, so that steps compare.
var topoSeed = maphash.MakeSeed()

// step is the caller-side state of the step being recorded, and (under
// mu) how the steps so far ran, which the device thread updates.
type step struct {
	on    bool
	ops   []func(*cudadrv.Ctx) error
	topo  maphash.Hash // hash of the ops' tags: the step's topology
	vars  []int32      // the step variables' values this step
	eager bool         // the step copies host memory: run it op by op

	mu     sync.Mutex
	graphs bool // graphs are on (Options.NoGraphs unset, no repeated failure)
	fails  int  // failed captures in a row
	stats  GraphStats
}

// graphState is the device-thread side: executable graphs by the hash of
// the work they queue, oldest first in order.
type graphState struct {
	execs map[uint64]*graphEntry
	order []uint64
}

type graphEntry struct {
	exec cudadrv.Graph
	topo uint64
}

// GraphStats counts how decode steps ran.
type GraphStats struct {
	Captured     int   // steps launched as a graph: Reused + Updated + Instantiated
	Reused       int   // steps that queued the same work as a kept graph: launched as is
	Updated      int   // steps captured and written into a kept graph of the same topology (all kept)
	Instantiated int   // steps captured into a new graph
	Eager        int   // steps run op by op
	Failed       int   // captures that failed (their steps ran op by op)
	LastError    error // the last failure
	Enabled      bool  // graphs are on
}

// GraphStats reports how the steps so far ran (it waits for the steps
// queued to be launched).
func (b *Backend) GraphStats() GraphStats {
	b.flush(nil) // the pending op goes first
	b.do(func(*cudadrv.Ctx) error { return nil })
	b.step.mu.Lock()
	defer b.step.mu.Unlock()
	s := b.step.stats
	s.Enabled = b.step.graphs
	return s
}

// setGraphs turns graphs on or off for the steps recorded from now on.
func (b *Backend) setGraphs(on bool) {
	b.step.mu.Lock()
	b.step.graphs = on
	b.step.mu.Unlock()
}

// BeginStep implements backend.Stepper: the ops until EndStep are one
// step. Read, Write, Sync, Pick, PickNext, Picked and
// SparseStats may not be called inside a step (they panic).
func (b *Backend) BeginStep() {
	b.flush(nil) // the pending op goes first
	if b.step.on {
		panic("cuda: BeginStep inside a step")
	}
	if b.varsDev == 0 {
		p, err := b.alloc(4 * maxStepVars)
		b.fail(err)
		b.varsDev = p
	}
	b.step.on, b.step.ops, b.step.eager = true, b.step.ops[:0], false
	b.step.topo.SetSeed(topoSeed)
	b.step.vars = b.step.vars[:0]
}

// stepVar makes v a step variable and returns its device address, or 0
// outside a step or when the step has used them all (then v must go as a
// kernel argument).
func (b *Backend) stepVar(v int) cudadrv.DevicePtr {
	if !b.step.on || len(b.step.vars) >= maxStepVars {
		return 0
	}
	b.step.vars = append(b.step.vars, int32(v))
	return b.varsDev.Add(4 * (len(b.step.vars) - 1))
}

// EndStep implements backend.Stepper: it queues the step (the step
// variables' values, then its ops, as one graph when it can) on the device
// thread and returns; an error surfaces at the next op that waits, as for
// every op. The step's ops and variables go with it, and the next step
// records into new slices.
func (b *Backend) EndStep() {
	b.flush(nil) // the pending op goes first
	if !b.step.on {
		panic("cuda: EndStep outside a step")
	}
	ops, topo, vars := b.step.ops, b.step.topo.Sum64(), b.step.vars
	b.step.on = false
	b.step.ops = make([]func(*cudadrv.Ctx) error, 0, len(ops))
	b.step.vars = make([]int32, 0, len(vars))
	b.step.mu.Lock()
	eager := b.step.eager || !b.step.graphs || len(ops) == 0 || b.timingOn
	b.step.mu.Unlock()
	if b.err != nil {
		return
	}
	b.dev.Go(func(c *cudadrv.Ctx) error {
		// In stream order: after the previous step has read them.
		if len(vars) > 0 {
			if err := c.CopyHtoD(b.varsDev, unsafe.Pointer(&vars[0]), 4*len(vars), b.stream); err != nil {
				return err
			}
		}
		if eager {
			b.countStep(-1, nil)
			return runOps(c, ops)
		}
		how, err := b.launchGraph(c, ops, topo)
		b.countStep(how, err)
		if err != nil {
			return runOps(c, ops) // nothing of a failed capture ran
		}
		return nil
	})
}

// countStep adds a step to the stats: how it got its graph (launchGraph),
// or -1 for op by op, or the capture's error.
func (b *Backend) countStep(how int, captureErr error) {
	b.step.mu.Lock()
	defer b.step.mu.Unlock()
	st := &b.step.stats
	switch {
	case how < 0:
		st.Eager++
	case captureErr != nil:
		st.Eager++
		st.Failed++
		st.LastError = captureErr
		if b.step.fails++; b.step.fails >= maxGraphFailures {
			b.step.graphs = false
		}
	default:
		b.step.fails = 0
		st.Captured++
		switch how {
		case reused:
			st.Reused++
		case updated:
			st.Updated++
		default:
			st.Instantiated++
		}
	}
}

func runOps(c *cudadrv.Ctx, ops []func(*cudadrv.Ctx) error) error {
	for _, f := range ops {
		if err := f(c); err != nil {
			return err
		}
	}
	return nil
}

// How launchGraph got its graph.
const (
	reused = iota
	updated
	instantiated
)

// launchGraph launches ops as a graph on the device thread: the kept graph
// that queues the same work if there is one, else a capture of ops, written
// into a kept graph of the same topology or instantiated anew.
func (b *Backend) launchGraph(c *cudadrv.Ctx, ops []func(*cudadrv.Ctx) error, topo uint64) (how int, err error) {
	if !c.HasGraphs() {
		return 0, fmt.Errorf("cuda: stream capture: not offered by this driver")
	}
	c.BeginDry()
	err = runOps(c, ops)
	key := c.EndDry()
	if err != nil {
		return 0, err
	}
	gs := &b.graph
	if e, ok := gs.execs[key]; ok {
		return reused, c.GraphLaunch(e.exec, b.stream)
	}
	if err := c.BeginCapture(b.stream); err != nil {
		return 0, err
	}
	if err := runOps(c, ops); err != nil {
		g, _ := c.EndCapture(b.stream) // leave capture mode; the graph is invalid
		c.DestroyCaptured(g)
		return 0, fmt.Errorf("capture: %w", err)
	}
	g, err := c.EndCapture(b.stream)
	if err != nil {
		return 0, fmt.Errorf("capture: %w", err)
	}
	defer c.DestroyCaptured(g)
	if len(gs.order) >= maxGraphs {
		// Full: rewrite the oldest kept graph of this topology in place (it
		// now queues this step's work, under the new key), else drop the
		// oldest. While there is room, every new key gets its own graph, so
		// that up to maxGraphs sequences or batch shapes alternate freely.
		for _, old := range gs.order {
			e := gs.execs[old]
			if e.topo != topo || c.GraphUpdate(e.exec, g) != nil {
				continue
			}
			gs.forget(old)
			gs.keep(key, e)
			return updated, c.GraphLaunch(e.exec, b.stream)
		}
		if err := gs.drop(c, b.stream, gs.order[0]); err != nil {
			return 0, err
		}
	}
	exec, err := c.Instantiate(g)
	if err != nil {
		return 0, fmt.Errorf("instantiate: %w", err)
	}
	gs.keep(key, &graphEntry{exec: exec, topo: topo})
	return instantiated, c.GraphLaunch(exec, b.stream)
}

func (gs *graphState) keep(key uint64, e *graphEntry) {
	if gs.execs == nil {
		gs.execs = map[uint64]*graphEntry{}
	}
	gs.execs[key] = e
	gs.order = append(gs.order, key)
}

func (gs *graphState) forget(key uint64) {
	delete(gs.execs, key)
	for i, o := range gs.order {
		if o == key {
			gs.order = append(gs.order[:i], gs.order[i+1:]...)
			break
		}
	}
}

// drop destroys the graph kept under key once the work queued so far no
// longer uses it.
func (gs *graphState) drop(c *cudadrv.Ctx, s cudadrv.Stream, key uint64) error {
	if err := c.StreamSynchronize(s); err != nil {
		return err
	}
	e := gs.execs[key]
	gs.forget(key)
	return c.GraphDestroy(e.exec)
}

// destroyAll destroys every kept graph (Close).
func (gs *graphState) destroyAll(c *cudadrv.Ctx) error {
	var errs []error
	for _, e := range gs.execs {
		errs = append(errs, c.GraphDestroy(e.exec))
	}
	gs.execs, gs.order = nil, nil
	return errors.Join(errs...)
}

// hostCopy marks the step being recorded (if any) as copying host memory,
// so that it runs op by op.
func (b *Backend) hostCopy() {
	if b.step.on {
		b.step.eager = true
	}
}

// outsideStep panics when op, which waits for or writes device memory out
// of stream order, is called inside a step.
func (b *Backend) outsideStep(op string) {
	if b.step.on {
		panic(fmt.Sprintf("cuda: %s inside a decode step (between BeginStep and EndStep)", op))
	}
}
