package power

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNoDriver is returned (wrapped) by the NVML functions where the NVIDIA
// management library cannot be loaded: no driver is installed.
var ErrNoDriver = errors.New("no NVIDIA driver (libnvidia-ml.so.1 not found)")

// errNoKernelDriver is where the library is installed but the kernel driver
// is not running (a machine with the user-space packages and no GPU).
var errNoKernelDriver = errors.New("no NVIDIA kernel driver loaded (libnvidia-ml.so.1 is installed)")

// sampleEvery is the power sampling period of a meter without an energy
// counter.
const sampleEvery = 20 * time.Millisecond

// nvmlLib is the NVML library (opened with dlopen on first use, so binaries
// start on machines without it); tests replace it with a fake and reset
// nvmlInit.
var nvmlLib nvmlAPI = &libNVML{Path: "libnvidia-ml.so.1"}

// nvmlInit initialises NVML once. The library then stays initialised for the
// life of the process: meters hold device handles across Start and Stop, and
// nvmlInit can take a second on a GPU without persistence mode.
var nvmlInit = sync.OnceValue(initNVML)

func initNVML() error {
	switch ret := nvmlLib.Init(); ret {
	case nvmlSuccess:
		return nil
	case nvmlLibraryNotFound:
		return ErrNoDriver
	case nvmlDriverNotLoaded:
		return errNoKernelDriver
	default:
		return fmt.Errorf("nvml init: %w", ret)
	}
}

// device returns the handle of GPU index (NVML's order: PCI bus order, which
// CUDA_VISIBLE_DEVICES does not change).
func device(index int) (nvmlDevice, error) {
	if err := nvmlInit(); err != nil {
		return nil, err
	}
	d, ret := nvmlLib.DeviceGetHandleByIndex(index)
	if ret != nvmlSuccess {
		return nil, fmt.Errorf("gpu %d: %w", index, ret)
	}
	return d, nil
}

// GPUPower returns the current power draw of GPU index in watts.
func GPUPower(index int) (float64, error) {
	d, err := device(index)
	if err != nil {
		return 0, err
	}
	mw, ret := d.GetPowerUsage()
	if ret != nvmlSuccess {
		return 0, fmt.Errorf("gpu %d power: %w", index, ret)
	}
	return float64(mw) / 1000, nil
}

// GPUInfo describes one GPU as NVML reports it. Fields the device does not
// support are zero.
type GPUInfo struct {
	Index       int     `json:"index"`
	Name        string  `json:"name"`
	UUID        string  `json:"uuid"`
	Driver      string  `json:"driver"`
	MemoryTotal uint64  `json:"memory_total"` // bytes
	MemoryUsed  uint64  `json:"memory_used"`  // bytes
	PowerLimitW float64 `json:"power_limit_w"`
	PowerDrawW  float64 `json:"power_draw_w"`
	CUDAVersion string  `json:"cuda_version"` // highest CUDA version the driver supports, e.g. "13.0"
}

// ListGPUs describes every GPU NVML sees, in NVML's index order.
func ListGPUs() ([]GPUInfo, error) {
	if err := nvmlInit(); err != nil {
		return nil, err
	}
	n, ret := nvmlLib.DeviceGetCount()
	if ret != nvmlSuccess {
		return nil, fmt.Errorf("count gpus: %w", ret)
	}
	driver, _ := nvmlLib.SystemGetDriverVersion()
	var cuda string
	if v, ret := nvmlLib.SystemGetCudaDriverVersion(); ret == nvmlSuccess {
		cuda = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	gpus := make([]GPUInfo, 0, n)
	for i := range n {
		d, ret := nvmlLib.DeviceGetHandleByIndex(i)
		if ret != nvmlSuccess {
			return nil, fmt.Errorf("gpu %d: %w", i, ret)
		}
		g := GPUInfo{Index: i, Driver: driver, CUDAVersion: cuda}
		g.Name, _ = d.GetName()
		g.UUID, _ = d.GetUUID()
		if m, ret := d.GetMemoryInfo(); ret == nvmlSuccess {
			g.MemoryTotal, g.MemoryUsed = m.Total, m.Used
		}
		if mw, ret := d.GetEnforcedPowerLimit(); ret == nvmlSuccess {
			g.PowerLimitW = float64(mw) / 1000
		}
		if mw, ret := d.GetPowerUsage(); ret == nvmlSuccess {
			g.PowerDrawW = float64(mw) / 1000
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

// gpuMeter measures one GPU with its energy counter or, where the counter is
// not supported, by sampling its power draw.
type gpuMeter struct {
	index   int
	label   string // "NVIDIA H200"
	dev     nvmlDevice
	counter bool // the energy counter works

	running bool
	start   time.Time
	startMJ uint64        // counter at Start (counter)
	stop    chan struct{} // closed by Stop (sampling)
	done    chan sampled  // the sampler's result (sampling)
}

// sampled is what the sampling goroutine hands back to Stop.
type sampled struct {
	tr     trapezoid
	failed int // readings NVML refused
}

// NewGPU returns a meter for GPU index (NVML's order, which is PCI bus
// order and ignores CUDA_VISIBLE_DEVICES, so on a machine with several GPUs
// match a CUDA device by UUID through ListGPUs). It uses the energy counter
// where the GPU has one (Volta and newer) and samples the power draw every
// 20 ms otherwise.
func NewGPU(index int) (Meter, error) {
	d, err := device(index)
	if err != nil {
		return nil, err
	}
	m := &gpuMeter{index: index, dev: d}
	m.label, _ = d.GetName()
	_, eret := d.GetTotalEnergyConsumption()
	m.counter = eret == nvmlSuccess
	if !m.counter {
		if _, pret := d.GetPowerUsage(); pret != nvmlSuccess {
			return nil, fmt.Errorf("gpu %d: no energy counter (%v) and no power reading (%v)", index, eret, pret)
		}
	}
	return m, nil
}

func (m *gpuMeter) Name() string {
	method := MethodPowerSampled
	if m.counter {
		method = MethodEnergyCounter
	}
	return fmt.Sprintf("gpu %d (%s), %s", m.index, m.label, method)
}

func (m *gpuMeter) Start() error {
	if m.running {
		return errStarted
	}
	if m.counter {
		mj, ret := m.dev.GetTotalEnergyConsumption()
		if ret != nvmlSuccess {
			return fmt.Errorf("gpu %d energy counter: %w", m.index, ret)
		}
		m.start, m.startMJ = time.Now(), mj
		m.running = true
		return nil
	}
	mw, ret := m.dev.GetPowerUsage()
	if ret != nvmlSuccess {
		return fmt.Errorf("gpu %d power: %w", m.index, ret)
	}
	m.start = time.Now()
	m.stop, m.done = make(chan struct{}), make(chan sampled, 1)
	go m.sample(m.start, sample{0, float64(mw) / 1000})
	m.running = true
	return nil
}

// sample reads the power draw every sampleEvery until Stop closes m.stop.
func (m *gpuMeter) sample(start time.Time, first sample) {
	var s sampled
	s.tr.add(first)
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			m.done <- s
			return
		case <-tick.C:
			mw, ret := m.dev.GetPowerUsage()
			if ret != nvmlSuccess {
				s.failed++
				continue
			}
			s.tr.add(sample{time.Since(start).Seconds(), float64(mw) / 1000})
		}
	}
}

func (m *gpuMeter) Stop() (Reading, error) {
	if !m.running {
		return Reading{}, errNotStarted
	}
	m.running = false
	if m.counter {
		mj, ret := m.dev.GetTotalEnergyConsumption()
		secs := time.Since(m.start).Seconds()
		if ret != nvmlSuccess {
			return Reading{}, fmt.Errorf("gpu %d energy counter: %w", m.index, ret)
		}
		if mj < m.startMJ {
			return Reading{}, fmt.Errorf("gpu %d energy counter went back from %d to %d mJ (driver reloaded?)", m.index, m.startMJ, mj)
		}
		return Reading{Joules: float64(mj-m.startMJ) / 1000, Seconds: secs, Method: MethodEnergyCounter}, nil
	}
	close(m.stop)
	s := <-m.done
	// The last reading closes the interval; if NVML refuses it, the last
	// good one is held to the end.
	w := s.tr.last.watts
	if mw, ret := m.dev.GetPowerUsage(); ret == nvmlSuccess {
		w = float64(mw) / 1000
	} else {
		s.failed++
	}
	secs := time.Since(m.start).Seconds()
	s.tr.add(sample{secs, w})
	note := fmt.Sprintf("%d power readings every %v, trapezoid rule", s.tr.n, sampleEvery)
	if s.failed > 0 {
		note += fmt.Sprintf("; %d readings failed", s.failed)
	}
	return Reading{Joules: s.tr.joules, Seconds: secs, Method: MethodPowerSampled, Note: note}, nil
}
