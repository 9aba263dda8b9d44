package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// devices runs on any machine: it describes the CPU and says why there is
// no GPU or energy counter rather than failing.
func TestDevices(t *testing.T) {
	noCUDA(t)
	code, out, errs := cli(t, "devices")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"cpu ", "threads", "gpu", "cpu energy", "--device auto  cpu (no GPU in this test"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	t.Log("\n" + out)
}

// noCUDA makes the CUDA probe fail, as on a machine without a GPU.
func noCUDA(t *testing.T) {
	old := cudaProbe
	cudaProbe = func() (string, error) { return "", errors.New("no GPU in this test") }
	t.Cleanup(func() { cudaProbe = old })
}

func TestDevicesJSON(t *testing.T) {
	noCUDA(t)
	code, out, errs := cli(t, "devices", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r deviceReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if r.CPU.Threads < 1 || r.Auto.Backend != "cpu" || r.Auto.Reason == "" {
		t.Errorf("got %+v", r)
	}
	if (len(r.GPUs) == 0) != (r.NoGPU != "") {
		t.Errorf("gpus %v, no_gpu %q: want exactly one", r.GPUs, r.NoGPU)
	}
}

// Where the CUDA backend reports a device, auto picks it.
func TestDevicesAutoPicksCUDA(t *testing.T) {
	old := cudaProbe
	t.Cleanup(func() { cudaProbe = old })
	cudaProbe = func() (string, error) { return "cuda:0 NVIDIA H200", nil }
	if code, out, errs := cli(t, "devices"); code != 0 || !strings.Contains(out, "--device auto  cuda (cuda:0 NVIDIA H200)") {
		t.Errorf("exit %d: %s%s", code, out, errs)
	}
	cudaProbe = func() (string, error) { return "", errors.New("no CUDA device") }
	if code, out, _ := cli(t, "devices"); code != 0 || !strings.Contains(out, "cpu (no CUDA device)") {
		t.Errorf("exit %d: %s", code, out)
	}
}
