package cudadrv

/*
#include <stdlib.h>
#include "drv.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Info describes a device.
type Info struct {
	Ordinal       int
	Name          string
	TotalMem      uint64 // bytes
	SMs           int
	Major, Minor  int // compute capability
	DriverVersion int // e.g. 13000
}

func (i Info) String() string {
	return fmt.Sprintf("cuda:%d %s, %.1f GiB, sm_%d%d, %d SMs, driver %d.%d", i.Ordinal, i.Name,
		float64(i.TotalMem)/(1<<30), i.Major, i.Minor, i.SMs, i.DriverVersion/1000, i.DriverVersion%1000/10)
}

// Device attributes (CUdevice_attribute).
const (
	attrSMs   = 16
	attrMajor = 75
	attrMinor = 76
)

// Device is one GPU with its primary context and a goroutine, locked to an
// OS thread, that runs every driver call.
type Device struct {
	info  Info
	calls chan func()
	done  chan struct{}
	dev   C.CUdevice
	ctx   Ctx

	mu       sync.Mutex
	asyncErr error // first error of a Go closure, reported by the next Do

	smu    sync.Mutex // serializes sends against Close; the device thread never takes it
	closed bool
}

// Open starts device ordinal's primary context on a dedicated thread.
func Open(ordinal int) (*Device, error) {
	n, err := DeviceCount()
	if err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("%w: device %d of %d", ErrNoDevice, ordinal, n)
	}
	d := &Device{calls: make(chan func(), 4096), done: make(chan struct{})}
	started := make(chan error)
	go d.loop(ordinal, started)
	if err := <-started; err != nil {
		return nil, err
	}
	return d, nil
}

// loop owns the OS thread on which the context is current.
func (d *Device) loop(ordinal int, started chan<- error) {
	runtime.LockOSThread()
	defer close(d.done)
	err := d.init(ordinal)
	started <- err
	if err != nil {
		return
	}
	for fn := range d.calls {
		fn()
	}
	d.ctx.free()
	C.at_cuDevicePrimaryCtxRelease(d.dev)
}

func (d *Device) init(ordinal int) error {
	if err := check("cuDeviceGet", C.at_cuDeviceGet(&d.dev, C.int(ordinal))); err != nil {
		return err
	}
	var ctx C.CUcontext
	if err := check("cuDevicePrimaryCtxRetain", C.at_cuDevicePrimaryCtxRetain(&ctx, d.dev)); err != nil {
		return err
	}
	if err := check("cuCtxSetCurrent", C.at_cuCtxSetCurrent(ctx)); err != nil {
		C.at_cuDevicePrimaryCtxRelease(d.dev)
		return err
	}
	var name [256]C.char
	var mem C.size_t
	var sms, major, minor C.int
	for _, e := range []error{
		check("cuDeviceGetName", C.at_cuDeviceGetName(&name[0], C.int(len(name)), d.dev)),
		check("cuDeviceTotalMem_v2", C.at_cuDeviceTotalMem(&mem, d.dev)),
		check("cuDeviceGetAttribute", C.at_cuDeviceGetAttribute(&sms, attrSMs, d.dev)),
		check("cuDeviceGetAttribute", C.at_cuDeviceGetAttribute(&major, attrMajor, d.dev)),
		check("cuDeviceGetAttribute", C.at_cuDeviceGetAttribute(&minor, attrMinor, d.dev)),
	} {
		if e != nil {
			C.at_cuDevicePrimaryCtxRelease(d.dev)
			return e
		}
	}
	drv, _ := DriverVersion()
	d.info = Info{Ordinal: ordinal, Name: C.GoString(&name[0]), TotalMem: uint64(mem), SMs: int(sms),
		Major: int(major), Minor: int(minor), DriverVersion: drv}
	d.ctx.args = (*argArena)(C.calloc(1, C.size_t(unsafe.Sizeof(argArena{}))))
	return nil
}

// Info describes the device.
func (d *Device) Info() Info { return d.info }

// Do runs fn on the device thread and waits for it. It returns fn's error,
// or else the first error of an earlier Go closure (then cleared).
func (d *Device) Do(fn func(c *Ctx) error) error {
	errc := make(chan error, 1)
	if !d.submit(func() { errc <- fn(&d.ctx) }) {
		return fmt.Errorf("cuda: device %d is closed", d.info.Ordinal)
	}
	err := <-errc
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		err = d.asyncErr
	}
	d.asyncErr = nil
	return err
}

// Go queues fn on the device thread and returns at once: calls run in the
// order they were queued. The first error is kept for the next Do; later
// closures still run (their launches fail fast after a sticky error).
func (d *Device) Go(fn func(c *Ctx) error) {
	d.submit(func() {
		if err := fn(&d.ctx); err != nil {
			d.mu.Lock()
			if d.asyncErr == nil {
				d.asyncErr = err
			}
			d.mu.Unlock()
		}
	})
}

func (d *Device) submit(fn func()) bool {
	d.smu.Lock()
	defer d.smu.Unlock()
	if d.closed {
		return false
	}
	d.calls <- fn
	return true
}

// Close waits for queued calls, releases the primary context and stops the
// device thread. Memory not freed is released with the context.
func (d *Device) Close() error {
	err := d.Do(func(c *Ctx) error { return c.Synchronize() })
	d.smu.Lock()
	if d.closed {
		d.smu.Unlock()
		return nil
	}
	d.closed = true
	close(d.calls)
	d.smu.Unlock()
	<-d.done
	return err
}
