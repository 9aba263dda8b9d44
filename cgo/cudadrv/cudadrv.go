// Package cudadrv is a thin binding over the CUDA driver API, opened with
// dlopen("libcuda.so.1") at run time: binaries that import it build without
// a CUDA toolkit and start on machines without a driver, where Open reports
// ErrNoDriver (no library) or ErrNoDevice (no usable GPU).
//
// A driver context is current per OS thread, so every call runs on one
// locked goroutine per Device: Do and Go hand it closures that receive a
// *Ctx, the only type whose methods call the driver. A *Ctx must not escape
// its closure.
package cudadrv

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "drv.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"
)

// ErrNoDriver means libcuda.so.1 could not be loaded (or lacks a required
// symbol): there is no NVIDIA driver on this machine.
var ErrNoDriver = errors.New("cuda: no driver")

// ErrNoDevice means the driver loaded but cuInit failed or found no GPU.
var ErrNoDevice = errors.New("cuda: no device")

// Error is a failed driver call.
type Error struct {
	Op   string // the driver function
	Code int    // the CUresult
	Name string // e.g. CUDA_ERROR_OUT_OF_MEMORY
	Msg  string // the driver's description
}

func (e *Error) Error() string {
	return fmt.Sprintf("cuda: %s: %s (%d): %s", e.Op, e.Name, e.Code, e.Msg)
}

func check(op string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	e := &Error{Op: op, Code: int(r), Name: "CUDA_ERROR_UNKNOWN_CODE", Msg: "unknown error"}
	var s *C.char
	if C.at_cuGetErrorName(r, &s) == 0 && s != nil {
		e.Name = C.GoString(s)
	}
	if C.at_cuGetErrorString(r, &s) == 0 && s != nil {
		e.Msg = C.GoString(s)
	}
	return e
}

var (
	loadOnce sync.Once
	loadErr  error
)

// driverLibrary is the driver's soname. ACTTAIL_LIBCUDA names another
// library to load instead: the CPU emulator of cuda/emu, for tests.
const driverLibrary = "libcuda.so.1"

func driverPath() string {
	if p := os.Getenv("ACTTAIL_LIBCUDA"); p != "" {
		return p
	}
	return driverLibrary
}

// openLibrary dlopens lib and resolves the driver API from it.
func openLibrary(lib string) error {
	name := C.CString(lib)
	defer C.free(unsafe.Pointer(name))
	var what *C.char
	switch C.at_open(name, &what) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%w: dlopen %s: %s", ErrNoDriver, lib, C.GoString(what))
	default:
		return fmt.Errorf("%w: %s lacks %s (driver too old)", ErrNoDriver, lib, C.GoString(what))
	}
}

// load opens the driver library and calls cuInit once per process.
func load() error {
	loadOnce.Do(func() {
		if loadErr = openLibrary(driverPath()); loadErr != nil {
			return
		}
		if err := check("cuInit", C.at_cuInit(0)); err != nil {
			loadErr = fmt.Errorf("%w: %w", ErrNoDevice, err)
		}
	})
	return loadErr
}

// DriverVersion is the CUDA version the driver supports, e.g. 13000 for 13.0.
func DriverVersion() (int, error) {
	if err := load(); err != nil {
		return 0, err
	}
	var v C.int
	if err := check("cuDriverGetVersion", C.at_cuDriverGetVersion(&v)); err != nil {
		return 0, err
	}
	return int(v), nil
}

// DeviceCount is the number of GPUs; no driver or no GPU is an error
// (ErrNoDriver or ErrNoDevice).
func DeviceCount() (int, error) {
	if err := load(); err != nil {
		return 0, err
	}
	var n C.int
	if err := check("cuDeviceGetCount", C.at_cuDeviceGetCount(&n)); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoDevice, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: cuDeviceGetCount found none", ErrNoDevice)
	}
	return int(n), nil
}
