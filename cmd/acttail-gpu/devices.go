package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/acttail/acttail-gpu/runtime/backend/cuda"
	"github.com/acttail/acttail-gpu/runtime/power"
)

// cudaProbe reports the CUDA backend --device auto would run on (device,
// and cuBLAS or not), or why there is none. Tests replace it.
var cudaProbe = func() (string, error) { return cuda.Available(cuda.Options{}) }

// deviceReport is what devices prints, and its --json form.
type deviceReport struct {
	CPU      power.CPUInfo   `json:"cpu"`
	GPUs     []power.GPUInfo `json:"gpus"`
	NoGPU    string          `json:"no_gpu,omitempty"` // why GPUs is empty
	GPUMeter energyMeter     `json:"gpu_energy"`
	CPUMeter energyMeter     `json:"cpu_energy"`
	Auto     autoBackend     `json:"auto"`
}

// energyMeter is the meter a run would use, or why there is none.
type energyMeter struct {
	Meter  string `json:"meter,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// autoBackend is the backend --device auto picks and why.
type autoBackend struct {
	Backend string `json:"backend"`
	Device  string `json:"device,omitempty"` // the CUDA device, when Backend is "cuda"
	Reason  string `json:"reason,omitempty"` // why not cuda, when Backend is "cpu"
}

func runDevices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("devices", "[--json]", stdout, stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	r := deviceReport{CPU: power.CPU(), GPUs: []power.GPUInfo{}}
	gpus, err := power.ListGPUs()
	switch {
	case err != nil:
		r.NoGPU = err.Error()
	case len(gpus) == 0:
		r.NoGPU = "the NVIDIA driver reports no GPU"
	default:
		r.GPUs = gpus
	}
	r.GPUMeter = meterOf(true)
	r.CPUMeter = meterOf(false)
	if dev, err := cudaProbe(); err != nil {
		r.Auto = autoBackend{Backend: "cpu", Reason: err.Error()}
	} else {
		r.Auto = autoBackend{Backend: "cuda", Device: dev}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printDevices(stdout, r)
	return nil
}

// meterOf names the energy meter a GPU or CPU run would use.
func meterOf(gpu bool) energyMeter {
	m, why := power.Auto(gpu)
	if m == nil {
		return energyMeter{Reason: why}
	}
	return energyMeter{Meter: m.Name()}
}

func printDevices(w io.Writer, r deviceReport) {
	line := func(label, format string, a ...any) {
		fmt.Fprintf(w, "%-14s %s\n", label, fmt.Sprintf(format, a...))
	}
	c := r.CPU
	model := c.Model
	if model == "" {
		model = "unknown model"
	}
	line("cpu", "%s, %d cores, %d threads, %s memory", model, c.Cores, c.Threads, gib(c.MemoryTotal))
	if r.NoGPU != "" {
		line("gpu", "none: %s", r.NoGPU)
	}
	for _, g := range r.GPUs {
		line(fmt.Sprintf("gpu %d", g.Index), "%s, %s memory (%s used), driver %s (CUDA %s), %.0f W now, limit %.0f W",
			g.Name, gib(g.MemoryTotal), gib(g.MemoryUsed), g.Driver, g.CUDAVersion, g.PowerDrawW, g.PowerLimitW)
	}
	meter := func(label string, m energyMeter) {
		if m.Meter != "" {
			line(label, "%s", m.Meter)
		} else {
			line(label, "%s", m.Reason)
		}
	}
	if len(r.GPUs) > 0 { // else the gpu line said why there is no GPU meter
		meter("gpu energy", r.GPUMeter)
	}
	meter("cpu energy", r.CPUMeter)
	if r.Auto.Backend == "cuda" {
		line("--device auto", "cuda (%s)", r.Auto.Device)
	} else {
		line("--device auto", "cpu (%s)", r.Auto.Reason)
	}
}

// gib formats a byte count in GiB.
func gib(b uint64) string {
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}
