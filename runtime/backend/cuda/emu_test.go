package cuda

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/acttail/acttail-gpu/cgo/cudadrv"
	"github.com/acttail/acttail-gpu/cuda/emu"
)

// TestEmulatedGPU runs this package's GPU tests on the CPU: it builds
// cuda/emu (the kernels compiled as C++ behind a stand-in libcuda) and runs
// this test binary again with ACTTAIL_LIBCUDA pointing at it, so that the
// kernels, the driver binding and the backend's host code are checked
// against the CPU backend on every machine (package cuda/emu).
func TestEmulatedGPU(t *testing.T) {
	if emu.Active() {
		t.Skip("already running on " + emu.Env)
	}
	lib := emu.Build(t, filepath.Join("..", "..", ".."))
	// -short: the large matrices take minutes on the emulator; the odd
	// shapes, tails and every code path stay.
	start := time.Now()
	out, err := emu.Rerun(lib, []string{"ACTTAIL_KERNELS=", cudadrv.BLASEnv + "=" + lib}, "-test.run", "^TestGPU", "-test.short", "-test.v", "-test.count=1")
	passed := regexp.MustCompile(`(?m)^--- PASS: (TestGPU\w+)`).FindAllSubmatch(out, -1)
	if err != nil || len(passed) == 0 {
		t.Fatalf("GPU tests on the emulator: %v\n%s", err, tail(out, 200))
	}
	var names []string
	for _, p := range passed {
		names = append(names, string(p[1]))
	}
	t.Logf("%d GPU tests passed on the emulator in %.0f s: %s", len(names), time.Since(start).Seconds(), strings.Join(names, " "))
	for _, l := range bytes.Split(out, []byte("\n")) {
		if bytes.Contains(l, []byte("graphs:")) {
			t.Logf("%s", bytes.TrimSpace(l))
		}
	}

	// Every benchmark's code (plans, calibration, graphs on and off, the
	// gather alone) on small shapes: the GPU run should not be where it
	// first runs.
	out, err = emu.Rerun(lib, []string{"ACTTAIL_KERNELS=", "ACTTAIL_BENCH_SMOKE=1", cudadrv.BLASEnv + "=" + lib},
		"-test.run", "^$", "-test.bench", ".", "-test.benchtime", "2x")
	for _, want := range []string{"BenchmarkCopy", "BenchmarkMatVec/BF16", "rows16/cublas", "x_own", "DecodeFloor/topk_0.8/eager", "DecodeFloor/threshold/chained", "x_graphs", "s=0.8_topk/chained", "s=0.9/gather", "s=0.9/threshold", "threshold/eager", "x_dense", "profile Decode7B/transposed_s=0.8_topk at_select"} {
		if err != nil || !bytes.Contains(out, []byte(want)) {
			t.Fatalf("benchmarks on the emulator (%s): %v\n%s", want, err, tail(out, 60))
		}
	}
}

// tail is the last n lines of out.
func tail(out []byte, n int) []byte {
	lines := bytes.Split(out, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, []byte("\n"))
}

// TestEmulatedGPUMemcheck runs the GPU tests on the emulator built with
// AddressSanitizer: a kernel reading or writing outside a device
// allocation (heap memory here, with red zones) fails it. It is this
// repository's memcheck where compute-sanitizer has no GPU to run on.
func TestEmulatedGPUMemcheck(t *testing.T) {
	if emu.Active() {
		t.Skip("already running on " + emu.Env)
	}
	if testing.Short() {
		t.Skip("-short")
	}
	lib, preload := emu.BuildASan(t, filepath.Join("..", "..", ".."))
	start := time.Now()
	out, err := emu.Rerun(lib, []string{"ACTTAIL_KERNELS=", cudadrv.BLASEnv + "=" + lib, "LD_PRELOAD=" + preload, "ASAN_OPTIONS=detect_leaks=0"},
		"-test.run", "^TestGPU", "-test.short", "-test.v", "-test.count=1")
	if err != nil || bytes.Contains(out, []byte("AddressSanitizer")) {
		t.Fatalf("GPU tests on the emulator with AddressSanitizer: %v\n%s", err, tail(out, 200))
	}
	t.Logf("GPU tests clean under AddressSanitizer in %.0f s", time.Since(start).Seconds())
}
