package cuda

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/cgo/cudadrv"
	"github.com/acttail/acttail-gpu/cuda/emu"
)

// TestEmulatedGPU runs this package's GPU tests on the CPU: it builds
// cuda/emu (the kernels compiled as C++ behind a stand-in libcuda) and runs
// this test binary again with ACTTAIL_LIBCUDA pointing at it, so that the
// kernels, the driver binding and the backend's host code are checked
// against the CPU backend on every machine (package cuda/emu). The
// emulator is built with AddressSanitizer where the compiler has it: a
// kernel reading or writing outside a device allocation fails the test,
// this repository's memcheck where compute-sanitizer has no GPU to run on.
//
// Each GPU test, and the benchmarks, run in a process of their own, as
// parallel subtests: the emulator runs one kernel at a time.
func TestEmulatedGPU(t *testing.T) {
	if emu.Active() {
		t.Skip("already running on " + emu.Env)
	}
	lib := emu.Build(t, filepath.Join("..", "..", ".."))
	env := []string{"ACTTAIL_KERNELS=", cudadrv.BLASEnv + "=" + lib.Path}
	list, err := lib.Rerun(env, "-test.list", "^TestGPU")
	names := strings.Fields(string(list))
	if err != nil || len(names) == 0 {
		t.Fatalf("listing the GPU tests: %v\n%s", err, list)
	}

	// Every benchmark's code (plans, calibration, graphs on and off, the
	// gather alone) on small shapes: the GPU run should not be where it
	// first runs. The longest subtest, it starts first.
	t.Run("benchmarks", func(t *testing.T) {
		t.Parallel()
		out, err := lib.Rerun(append(env, "ACTTAIL_BENCH_SMOKE=1"), "-test.run", "^$", "-test.bench", ".", "-test.benchtime", "2x")
		for _, want := range []string{"BenchmarkCopy", "BenchmarkMatVec/BF16", "rows16/cublas", "x_own", "DecodeFloor/topk_0.8/eager", "DecodeFloor/threshold/chained", "x_graphs", "s=0.8_topk/chained", "s=0.9/gather", "s=0.9/threshold", "threshold/eager", "x_dense", "timing Decode7B/transposed_s=0.8_topk at_select"} {
			if err != nil || bytes.Contains(out, []byte("AddressSanitizer")) || !bytes.Contains(out, []byte(want)) {
				t.Fatalf("benchmarks on the emulator (%s): %v\n%s", want, err, tail(out, 60))
			}
		}
	})

	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// -short: the large matrices take minutes on the emulator; the
			// odd shapes, tails and every code path stay.
			out, err := lib.Rerun(env, "-test.run", "^"+name+"$", "-test.short", "-test.v", "-test.count=1")
			ran := bytes.Contains(out, []byte("--- PASS: "+name)) || bytes.Contains(out, []byte("--- SKIP: "+name))
			if err != nil || bytes.Contains(out, []byte("AddressSanitizer")) || !ran {
				t.Fatalf("%s on the emulator: %v\n%s", name, err, tail(out, 200))
			}
			for _, l := range bytes.Split(out, []byte("\n")) {
				if bytes.Contains(l, []byte("graphs:")) || bytes.Contains(l, []byte("--- SKIP")) {
					t.Logf("%s", bytes.TrimSpace(l))
				}
			}
		})
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
