package power

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// useNVML makes lib the NVML library for one test.
func useNVML(t *testing.T, lib nvmlAPI) {
	oldLib, oldInit := nvmlLib, nvmlInit
	nvmlLib, nvmlInit = lib, sync.OnceValue(initNVML)
	t.Cleanup(func() { nvmlLib, nvmlInit = oldLib, oldInit })
}

// oneGPU is an NVML with the single device d.
type oneGPU struct{ d nvmlDevice }

func (oneGPU) Init() nvmlReturn                  { return nvmlSuccess }
func (oneGPU) DeviceGetCount() (int, nvmlReturn) { return 1, nvmlSuccess }
func (g oneGPU) DeviceGetHandleByIndex(i int) (nvmlDevice, nvmlReturn) {
	if i != 0 {
		return nil, nvmlInvalidArgument
	}
	return g.d, nvmlSuccess
}
func (oneGPU) SystemGetDriverVersion() (string, nvmlReturn)  { return "580.65.06", nvmlSuccess }
func (oneGPU) SystemGetCudaDriverVersion() (int, nvmlReturn) { return 13000, nvmlSuccess }

// fakeGPU answers each query with its function, or "not supported" where
// that is nil, and counts the power readings.
type fakeGPU struct {
	energy     func() (uint64, nvmlReturn)
	power      func() (uint32, nvmlReturn)
	info       *GPUInfo // UUID, memory and power limit, when set
	powerCalls atomic.Int32
}

func (d *fakeGPU) GetName() (string, nvmlReturn) { return "NVIDIA H200", nvmlSuccess }
func (d *fakeGPU) GetUUID() (string, nvmlReturn) {
	if d.info == nil {
		return "", nvmlNotSupported
	}
	return d.info.UUID, nvmlSuccess
}
func (d *fakeGPU) GetMemoryInfo() (nvmlMemory, nvmlReturn) {
	if d.info == nil {
		return nvmlMemory{}, nvmlNotSupported
	}
	return nvmlMemory{Total: d.info.MemoryTotal, Used: d.info.MemoryUsed, Free: d.info.MemoryTotal - d.info.MemoryUsed}, nvmlSuccess
}
func (d *fakeGPU) GetEnforcedPowerLimit() (uint32, nvmlReturn) {
	if d.info == nil {
		return 0, nvmlNotSupported
	}
	return uint32(d.info.PowerLimitW * 1000), nvmlSuccess
}
func (d *fakeGPU) GetPowerUsage() (uint32, nvmlReturn) {
	d.powerCalls.Add(1)
	if d.power == nil {
		return 0, nvmlNotSupported
	}
	return d.power()
}
func (d *fakeGPU) GetTotalEnergyConsumption() (uint64, nvmlReturn) {
	if d.energy == nil {
		return 0, nvmlNotSupported
	}
	return d.energy()
}

// Where libnvidia-ml.so.1 cannot be opened every entry point says so.
func TestNoDriver(t *testing.T) {
	useNVML(t, &libNVML{Path: filepath.Join(t.TempDir(), "libnvidia-ml.so.1")})
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
func startGPU(t *testing.T, d *fakeGPU) Meter {
	t.Helper()
	useNVML(t, oneGPU{d})
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
		d := &fakeGPU{energy: func() (uint64, nvmlReturn) {
			v := c.counter[0]
			c.counter = c.counter[1:]
			return v, nvmlSuccess
		}}
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
		if d.powerCalls.Load() != 0 {
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
		d := &fakeGPU{power: func() (uint32, nvmlReturn) {
			if calls.Add(1) > 2 && failAfterStart { // NewGPU's probe, Start
				return 0, nvmlUnknown
			}
			return 250_000, nvmlSuccess
		}}
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
	useNVML(t, oneGPU{&fakeGPU{}})
	if _, err := NewGPU(0); err == nil || !strings.Contains(err.Error(), "no power reading") {
		t.Errorf("NewGPU: %v", err)
	}
	if _, err := NewGPU(1); !errors.Is(err, nvmlInvalidArgument) {
		t.Errorf("NewGPU(1): %v", err)
	}
}

func TestListGPUsAndPower(t *testing.T) {
	d := &fakeGPU{
		info:  &GPUInfo{UUID: "GPU-0123", MemoryTotal: 150 << 30, MemoryUsed: 1 << 30, PowerLimitW: 700},
		power: func() (uint32, nvmlReturn) { return 75_500, nvmlSuccess },
	}
	useNVML(t, oneGPU{d})
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

// fakeLibNVML is a libnvidia-ml.so.1 stand-in: one GPU, its name, UUID,
// memory, power limit and draw, and an energy counter that rises by 1000
// mJ a read. Built by the C compiler, it checks the binding's calling
// convention, string buffers and struct layout through dlopen.
const fakeLibNVML = `
#include <string.h>
typedef struct { unsigned long long total, free, used; } mem;
static int device = 42;
int nvmlInit_v2(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 1; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d) { if (i != 0) return 2; *d = &device; return 0; }
int nvmlSystemGetDriverVersion(char *s, unsigned int n) { if (n < 80) return 7; strcpy(s, "580.65.06"); return 0; }
int nvmlSystemGetCudaDriverVersion(int *v) { *v = 12080; return 0; }
int nvmlDeviceGetName(void *d, char *s, unsigned int n) { if (d != &device || n < 96) return 2; strcpy(s, "NVIDIA H200"); return 0; }
int nvmlDeviceGetUUID(void *d, char *s, unsigned int n) { if (n < 96) return 7; strcpy(s, "GPU-0123"); return 0; }
int nvmlDeviceGetMemoryInfo(void *d, mem *m) { m->total = 150ULL << 30; m->used = 1ULL << 30; m->free = m->total - m->used; return 0; }
int nvmlDeviceGetEnforcedPowerLimit(void *d, unsigned int *mw) { *mw = 700000; return 0; }
int nvmlDeviceGetPowerUsage(void *d, unsigned int *mw) { *mw = 75500; return 0; }
static unsigned long long energy = 1ULL << 40;
int nvmlDeviceGetTotalEnergyConsumption(void *d, unsigned long long *mj) { *mj = energy; energy += 1000; return 0; }
`

// The binding loads a real shared library: devices, strings and memory as
// the library wrote them, energy from the counter. A library that lacks a
// function is refused at Init.
func TestLibNVML(t *testing.T) {
	cc, err := exec.LookPath(cCompiler())
	if err != nil {
		t.Skipf("no C compiler: %v", err)
	}
	dir := t.TempDir()
	build := func(name, src string) string {
		c, so := filepath.Join(dir, name+".c"), filepath.Join(dir, name+".so")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cc, err, out)
		}
		return so
	}
	useNVML(t, &libNVML{Path: build("nvml", fakeLibNVML)})
	gpus, err := ListGPUs()
	if err != nil {
		t.Fatal(err)
	}
	want := GPUInfo{Index: 0, Name: "NVIDIA H200", UUID: "GPU-0123", Driver: "580.65.06",
		MemoryTotal: 150 << 30, MemoryUsed: 1 << 30, PowerLimitW: 700, PowerDrawW: 75.5, CUDAVersion: "12.8"}
	if len(gpus) != 1 || gpus[0] != want {
		t.Errorf("got %+v\nwant %+v", gpus, want)
	}
	m, err := NewGPU(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Stop(); err != nil || r.Joules != 1 || r.Method != MethodEnergyCounter {
		t.Errorf("got %+v, %v; want 1 J by the counter", r, err)
	}
	if _, err := NewGPU(1); !errors.Is(err, nvmlInvalidArgument) {
		t.Errorf("NewGPU(1): %v", err)
	}

	useNVML(t, &libNVML{Path: build("old", "int nvmlInit_v2(void) { return 0; }\n")})
	if _, err := ListGPUs(); !errors.Is(err, nvmlFunctionNotFound) {
		t.Errorf("a library without the device functions: %v", err)
	}
}

// cCompiler is the compiler cgo uses.
func cCompiler() string {
	if cc := os.Getenv("CC"); cc != "" {
		return strings.Fields(cc)[0]
	}
	return "gcc"
}
