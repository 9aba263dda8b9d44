package cuda

import (
	"errors"
	"fmt"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
)

// A decode step is some 10–20 launches a layer, each a few microseconds of
// host and device overhead for kernels that may run for less. Between
// BeginStep and EndStep the ops are recorded instead of queued; EndStep
// captures them into a CUDA graph and launches it. Kernel arguments change
// from step to step (position, token ids, scratch addresses), so every step
// is captured again, and the executable graph of an earlier step of the
// same topology is updated in place (cuGraphExecUpdate), which is much
// cheaper than instantiating one.
// Executable graphs are kept by topology (the sequence of kernels a step
// queues: a one-token step, a batch step of n sequences, sparse or dense),
// up to maxGraphs of them, so that a server alternating batch sizes updates
// rather than instantiates.
//
// A step that copies host memory to the device (a budget written into
// c_sites for the first time, more than inlineTokens token ids) runs op by
// op: a captured copy would read the host memory when the graph runs, not
// when it was recorded. So does every step when the driver has no stream
// capture or Options.NoGraphs is set. If a capture fails, the step's ops
// run op by op instead and the error is kept (GraphStats); after
// maxGraphFailures failures in a row graphs are switched off.

var _ backend.Stepper = (*Backend)(nil)

// maxGraphFailures is the failed captures in a row after which graphs are
// switched off; maxGraphs is the executable graphs kept.
const (
	maxGraphFailures = 3
	maxGraphs        = 8
)

// step is the caller-side state of the step being recorded.
type step struct {
	on     bool
	ops    []func(*cudadrv.Ctx) error
	sig    uint64 // FNV-1a of the ops' tags: the step's topology
	eager  bool   // the step copies host memory: run it op by op
	graphs bool   // graphs are on (Options.NoGraphs unset, no repeated failure)
	fails  int    // failed captures in a row
	stats  GraphStats
}

// graphState is the device-thread side: executable graphs by topology,
// oldest first in order.
type graphState struct {
	execs map[uint64]cudadrv.Graph
	order []uint64
}

const fnvOffset, fnvPrime = 14695981039346656037, 1099511628211

// fnv extends the FNV-1a hash h with tag and a separator.
func fnv(h uint64, tag string) uint64 {
	for i := 0; i < len(tag); i++ {
		h = (h ^ uint64(tag[i])) * fnvPrime
	}
	return (h ^ 0xff) * fnvPrime
}

// GraphStats counts how decode steps ran.
type GraphStats struct {
	Captured     int   // steps launched as a graph
	Updated      int   // of those, steps that updated the previous graph in place
	Instantiated int   // of those, steps that instantiated a new graph
	Eager        int   // steps run op by op
	Failed       int   // captures that failed (their steps ran op by op)
	LastError    error // the last failure
	Enabled      bool  // graphs are on
}

// GraphStats reports how the steps so far ran.
func (b *Backend) GraphStats() GraphStats {
	s := b.step.stats
	s.Enabled = b.step.graphs
	return s
}

// BeginStep implements backend.Stepper: the ops until EndStep are one
// step. Read, Write, Sync, Argmax, Sample, LoadSites and SparseStats may
// not be called inside a step (they panic).
func (b *Backend) BeginStep() {
	if b.step.on {
		panic("cuda: BeginStep inside a step")
	}
	b.step.on, b.step.ops, b.step.eager, b.step.sig = true, b.step.ops[:0], false, fnvOffset
}

// EndStep implements backend.Stepper: it queues the recorded step, as one
// graph when it can.
func (b *Backend) EndStep() {
	if !b.step.on {
		panic("cuda: EndStep outside a step")
	}
	ops, sig := b.step.ops, b.step.sig
	b.step.on = false
	if b.step.eager || !b.step.graphs || len(ops) == 0 {
		b.step.stats.Eager++
		must(b.dev.Do(func(c *cudadrv.Ctx) error { return runOps(c, ops) }))
		return
	}
	var captureErr error
	updated := false
	must(b.dev.Do(func(c *cudadrv.Ctx) error {
		updated, captureErr = b.capture(c, ops, sig)
		if captureErr != nil {
			return runOps(c, ops) // nothing of a failed capture ran
		}
		return nil
	}))
	if captureErr != nil {
		b.step.stats.Eager++
		b.step.stats.Failed++
		b.step.stats.LastError = captureErr
		if b.step.fails++; b.step.fails >= maxGraphFailures {
			b.step.graphs = false
		}
		return
	}
	b.step.fails = 0
	b.step.stats.Captured++
	if updated {
		b.step.stats.Updated++
	} else {
		b.step.stats.Instantiated++
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

// capture records ops into a graph on the device thread and launches it,
// updating the executable graph of the same topology (sig) when there is
// one and the driver agrees.
func (b *Backend) capture(c *cudadrv.Ctx, ops []func(*cudadrv.Ctx) error, sig uint64) (updated bool, err error) {
	if !c.HasGraphs() {
		return false, fmt.Errorf("cuda: stream capture: not offered by this driver")
	}
	if err := c.BeginCapture(b.stream); err != nil {
		return false, err
	}
	if err := runOps(c, ops); err != nil {
		g, _ := c.EndCapture(b.stream) // leave capture mode; the graph is invalid
		c.DestroyCaptured(g)
		return false, fmt.Errorf("capture: %w", err)
	}
	g, err := c.EndCapture(b.stream)
	if err != nil {
		return false, fmt.Errorf("capture: %w", err)
	}
	defer c.DestroyCaptured(g)
	gs := &b.graph
	if e, ok := gs.execs[sig]; ok {
		if c.GraphUpdate(e, g) == nil {
			return true, c.GraphLaunch(e, b.stream)
		}
		// The driver refused the update: replace the graph.
		if err := gs.drop(c, b.stream, sig); err != nil {
			return false, err
		}
	}
	if len(gs.order) >= maxGraphs {
		if err := gs.drop(c, b.stream, gs.order[0]); err != nil {
			return false, err
		}
	}
	e, err := c.Instantiate(g)
	if err != nil {
		return false, fmt.Errorf("instantiate: %w", err)
	}
	if gs.execs == nil {
		gs.execs = map[uint64]cudadrv.Graph{}
	}
	gs.execs[sig] = e
	gs.order = append(gs.order, sig)
	return false, c.GraphLaunch(e, b.stream)
}

// drop destroys the executable graph of topology sig once the work queued
// so far no longer uses it.
func (gs *graphState) drop(c *cudadrv.Ctx, s cudadrv.Stream, sig uint64) error {
	if err := c.StreamSynchronize(s); err != nil {
		return err
	}
	e := gs.execs[sig]
	delete(gs.execs, sig)
	for i, o := range gs.order {
		if o == sig {
			gs.order = append(gs.order[:i], gs.order[i+1:]...)
			break
		}
	}
	return c.GraphDestroy(e)
}

// destroyAll destroys every executable graph (Close).
func (gs *graphState) destroyAll(c *cudadrv.Ctx) error {
	var errs []error
	for _, e := range gs.execs {
		errs = append(errs, c.GraphDestroy(e))
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
