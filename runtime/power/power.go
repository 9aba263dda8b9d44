// Package power measures the energy a run uses and describes the CPU and
// GPUs the runtime sees.
//
// A Meter brackets a piece of work: Start before it, Stop after it, and the
// Reading says how many joules were used over how many seconds and how they
// were measured. Three methods exist, best first:
//
//   - "nvml-energy-counter": the GPU's own energy counter (NVML, Volta and
//     newer), read at Start and Stop; exact up to the driver's update rate.
//   - "nvml-power-sampled": the GPU's power reading (NVML) sampled every
//     20 ms and integrated with the trapezoid rule, where the counter is not
//     supported. The driver averages the reading itself, so runs under about
//     a second are rough.
//   - "rapl": the CPU package energy counters of the Linux powercap interface
//     (/sys/class/powercap, Intel RAPL and AMD's RAPL-compatible counters).
//
// Nothing here changes a device setting: NVML and sysfs are only read. On a
// machine without a driver or readable counters every constructor returns an
// error whose text says why, for a report's empty energy column.
//
// A Meter is not safe for concurrent use; Start and Stop alternate.
//
// # Building
//
// NVML is libnvidia-ml.so.1, opened with dlopen on first use by the small
// binding in nvmllib.go: binaries build without the NVIDIA library and run
// without a driver. The binding declares only the functions it calls, so
// it compiles without warnings.
package power

import (
	"errors"
	"fmt"
)

// Meter measures the energy used between Start and Stop.
type Meter interface {
	// Start records the counters at the start of the work.
	Start() error
	// Stop ends the measurement and returns the energy used since Start.
	Stop() (Reading, error)
	// Name says what is measured and how, e.g. "gpu 0 (NVIDIA H200), energy counter".
	Name() string
}

// Reading is the energy used between a meter's Start and Stop.
type Reading struct {
	Joules  float64
	Seconds float64
	// Method is "nvml-energy-counter", "nvml-power-sampled" or "rapl".
	Method string
	// Note qualifies the number (zones summed, failed samples, ...); empty
	// when there is nothing to add.
	Note string
}

// Method names of a Reading.
const (
	MethodEnergyCounter = "nvml-energy-counter"
	MethodPowerSampled  = "nvml-power-sampled"
	MethodRAPL          = "rapl"
)

// errNotStarted and errStarted report Start and Stop out of turn.
var (
	errNotStarted = errors.New("meter stopped before it was started")
	errStarted    = errors.New("meter started twice")
)

// Auto returns the best meter for a run on the GPU (gpu true: NVML on
// device 0) or on the CPU (RAPL). When there is none it returns nil and the
// reason the energy column will be empty; with a meter the reason is "".
//
// A GPU run never falls back to RAPL: CPU package energy is not the GPU's.
func Auto(gpu bool) (Meter, string) {
	if gpu {
		m, err := NewGPU(0)
		if err != nil {
			return nil, fmt.Sprintf("no GPU energy meter: %v", err)
		}
		return m, ""
	}
	m, err := NewRAPL()
	if err != nil {
		return nil, fmt.Sprintf("no CPU energy meter: %v", err)
	}
	return m, ""
}
