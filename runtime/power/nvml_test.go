package power

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// useNVML makes lib the NVML library for one test.
func useNVML(t *testing.T, lib nvml.Interface) {
	oldLib, oldInit := nvmlLib, nvmlInit
	nvmlLib, nvmlInit = lib, sync.OnceValue(initNVML)
	t.Cleanup(func() { nvmlLib, nvmlInit = oldLib, oldInit })
}

// oneGPU is an NVML with the single device d.
func oneGPU(d nvml.Device) *mock.Interface {
	return &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return 1, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i != 0 {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return d, nvml.SUCCESS
		},
		SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return "580.65.06", nvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return 13000, nvml.SUCCESS },
	}
}

func name() (string, nvml.Return) { return "NVIDIA H200", nvml.SUCCESS }

// Where libnvidia-ml.so.1 cannot be opened every entry point says so.
func TestNoDriver(t *testing.T) {
	useNVML(t, nvml.New(nvml.WithLibraryPath(filepath.Join(t.TempDir(), "libnvidia-ml.so.1"))))
	if _, err := NewGPU(0); !errors.Is(err, ErrNoDriver) {
		t.Errorf("NewGPU: %v", err)
	}
	if _, err := GPUPower(0); !errors.Is(err, ErrNoDriver) {
		t.Errorf("GPUPower: %v", err)
	}
	if _, err := ListGPUs(); !errors.Is(err, ErrNoDriver) {
		t.Errorf("ListGPUs: %v", err)
	}
	m, why := Auto(true)
	if m != nil || !strings.Contains(why, "libnvidia-ml.so.1 not found") {
		t.Errorf("Auto(true): %v, %q", m, why)
	}
}

// The host's own NVML: a meter or a reason, never a panic. On a machine
// with a GPU this measures a short idle interval.
func TestHostNVML(t *testing.T) {
	m, err := NewGPU(0)
	if err != nil {
		t.Log(err)
		return
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %+v", m.Name(), r)
	gpus, err := ListGPUs()
	if err != nil || len(gpus) == 0 {
		t.Fatalf("ListGPUs: %v, %v", gpus, err)
	}
	t.Logf("%+v", gpus)
}

// startGPU makes d the only GPU and starts a meter on it.
func startGPU(t *testing.T, d *mock.Device) Meter {
	t.Helper()
	useNVML(t, oneGPU(d))
	m, err := NewGPU(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	return m
}

// The counter's difference is the energy; a counter that goes back (driver
// reloaded) is an error.
func TestGPUEnergyCounter(t *testing.T) {
	for _, c := range []struct {
		counter []uint64 // probe, Start, Stop (mJ)
		joules  float64
		err     string
	}{
		{[]uint64{100, 1000, 6500}, 5.5, ""},
		{[]uint64{5000, 5000, 10}, 0, "went back"},
	} {
		d := &mock.Device{
			GetNameFunc: name,
			GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) {
				v := c.counter[0]
				c.counter = c.counter[1:]
				return v, nvml.SUCCESS
			},
		}
		m := startGPU(t, d)
		if got, want := m.Name(), "gpu 0 (NVIDIA H200), nvml-energy-counter"; got != want {
			t.Errorf("name %q, want %q", got, want)
		}
		r, err := m.Stop()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Stop: %v, want an error with %q", err, c.err)
			}
			continue
		}
		if err != nil || r.Joules != c.joules || r.Method != MethodEnergyCounter {
			t.Errorf("got %+v, %v; want %g J by the counter", r, err, c.joules)
		}
		if len(d.GetPowerUsageCalls()) != 0 {
			t.Error("power was sampled although the counter works")
		}
	}
}

// Without the counter the meter samples a constant 250 W: the integral is
// 250 W times the interval, whatever the number of samples. Readings after
// Start fail, and the last good one is held.
func TestGPUSampledPower(t *testing.T) {
	for _, failAfterStart := range []bool{false, true} {
		var calls atomic.Int32
		d := &mock.Device{
			GetNameFunc: name,
			GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) {
				return 0, nvml.ERROR_NOT_SUPPORTED
			},
			GetPowerUsageFunc: func() (uint32, nvml.Return) {
				if calls.Add(1) > 2 && failAfterStart { // NewGPU's probe, Start
					return 0, nvml.ERROR_UNKNOWN
				}
				return 250_000, nvml.SUCCESS
			},
		}
		m := startGPU(t, d)
		if !strings.HasSuffix(m.Name(), MethodPowerSampled) {
			t.Errorf("name %q", m.Name())
		}
		time.Sleep(3 * sampleEvery) // let the sampler run; the result does not depend on it
		r, err := m.Stop()
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(r.Joules-250*r.Seconds) > 1e-9 || r.Method != MethodPowerSampled {
			t.Errorf("got %+v, want 250 W × %g s", r, r.Seconds)
		}
		if failed := strings.Contains(r.Note, "failed"); failed != failAfterStart {
			t.Errorf("fail %v: note %q", failAfterStart, r.Note)
		}
	}
}

func TestGPUNoPowerReading(t *testing.T) {
	d := &mock.Device{
		GetNameFunc:                   name,
		GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED },
		GetPowerUsageFunc:             func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED },
	}
	useNVML(t, oneGPU(d))
	if _, err := NewGPU(0); err == nil || !strings.Contains(err.Error(), "no power reading") {
		t.Errorf("NewGPU: %v", err)
	}
	if _, err := NewGPU(1); !errors.Is(err, nvml.ERROR_INVALID_ARGUMENT) {
		t.Errorf("NewGPU(1): %v", err)
	}
}

func TestListGPUsAndPower(t *testing.T) {
	d := &mock.Device{
		GetNameFunc: name,
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-0123", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 150 << 30, Used: 1 << 30, Free: 149 << 30}, nvml.SUCCESS
		},
		GetEnforcedPowerLimitFunc: func() (uint32, nvml.Return) { return 700_000, nvml.SUCCESS },
		GetPowerUsageFunc:         func() (uint32, nvml.Return) { return 75_500, nvml.SUCCESS },
	}
	useNVML(t, oneGPU(d))
	gpus, err := ListGPUs()
	if err != nil {
		t.Fatal(err)
	}
	want := GPUInfo{Index: 0, Name: "NVIDIA H200", UUID: "GPU-0123", Driver: "580.65.06",
		MemoryTotal: 150 << 30, MemoryUsed: 1 << 30, PowerLimitW: 700, PowerDrawW: 75.5, CUDAVersion: "13.0"}
	if len(gpus) != 1 || gpus[0] != want {
		t.Errorf("got %+v\nwant %+v", gpus, want)
	}
	if w, err := GPUPower(0); err != nil || w != 75.5 {
		t.Errorf("GPUPower: %g, %v", w, err)
	}
}
