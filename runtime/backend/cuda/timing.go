package cuda

import (
	"errors"
	"slices"

	"github.com/acttail/acttail-gpu/cgo"
)

// Profiling: between StartProfile and StopProfile every queued op (a
// kernel, or the few an op launches together) is bracketed by two CUDA
// events, and StopProfile sums the device time between them by op tag.
// Steps run op by op meanwhile (a graph has no per-kernel events), so the
// profile shows where a decode step's device time goes, not how fast a
// graph runs it; the events add a little time of their own.

// KernelTime is the device time of one kind of op over a profile.
type KernelTime struct {
	Name    string  // the op's tag: a kernel name, or the kernels it launches
	Calls   int     // times queued
	Seconds float64 // total device time
}

// timing is the device-thread side of a timing.
type timing struct {
	on      bool
	free    []cudadrv.Event // created, unused
	pending []timed         // recorded, not read yet
}

type timed struct {
	tag        string
	start, end cudadrv.Event
}

// StartTiming starts timing every queued op; decode steps run op by op
// until StopProfile.
func (b *Backend) StartTiming() {
	b.flush(nil) // the pending op goes first
	b.outsideStep("start profile")
	b.timingOn = true
	b.dev.Go(func(*cudadrv.Ctx) error { b.timing.on = true; return nil })
}

// StopTiming waits for the work queued so far and returns the device time
// of each kind of op since StartProfile, the largest total first.
func (b *Backend) StopTiming() ([]KernelTime, error) {
	b.flush(nil) // the pending op goes first
	b.outsideStep("stop profile")
	b.timingOn = false
	var out []KernelTime
	err := b.dev.Do(func(c *cudadrv.Ctx) error {
		b.timing.on = false
		if err := c.StreamSynchronize(b.stream); err != nil {
			return err
		}
		by := map[string]*KernelTime{}
		var errs []error
		for _, t := range b.timing.pending {
			ms, err := c.EventElapsed(t.start, t.end)
			errs = append(errs, err)
			k := by[t.tag]
			if k == nil {
				k = &KernelTime{Name: t.tag}
				by[t.tag] = k
			}
			k.Calls++
			k.Seconds += float64(ms) / 1e3
			b.timing.free = append(b.timing.free, t.start, t.end)
		}
		b.timing.pending = b.timing.pending[:0]
		for _, k := range by {
			out = append(out, *k)
		}
		return errors.Join(errs...)
	})
	slices.SortFunc(out, func(a, b KernelTime) int {
		switch {
		case a.Seconds > b.Seconds:
			return -1
		case a.Seconds < b.Seconds:
			return 1
		}
		return 0
	})
	return out, err
}

// timedOp wraps f in two events when profiling (on the device thread).
func (b *Backend) timedOp(tag string, f func(*cudadrv.Ctx) error) func(*cudadrv.Ctx) error {
	return func(c *cudadrv.Ctx) error {
		if !b.timing.on {
			return f(c)
		}
		start, err := b.event(c)
		if err != nil {
			return err
		}
		end, err := b.event(c)
		if err != nil {
			return err
		}
		if err := c.EventRecord(start, b.stream); err != nil {
			return err
		}
		if err := f(c); err != nil {
			return err
		}
		b.timing.pending = append(b.timing.pending, timed{tag, start, end})
		return c.EventRecord(end, b.stream)
	}
}

func (b *Backend) event(c *cudadrv.Ctx) (cudadrv.Event, error) {
	if n := len(b.timing.free); n > 0 {
		e := b.timing.free[n-1]
		b.timing.free = b.timing.free[:n-1]
		return e, nil
	}
	return c.EventCreate()
}

// destroyEvents frees the profile's events (Close).
func (p *timing) destroyEvents(c *cudadrv.Ctx) error {
	var errs []error
	for _, e := range p.free {
		errs = append(errs, c.EventDestroy(e))
	}
	for _, t := range p.pending {
		errs = append(errs, c.EventDestroy(t.start), c.EventDestroy(t.end))
	}
	p.free, p.pending = nil, nil
	return errors.Join(errs...)
}
