package cuda

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEmulatedGPU runs this package's GPU tests on the CPU: it builds
// cuda/emu (the kernels compiled as C++ behind a stand-in libcuda) and runs
// this test binary again with ACTTAIL_LIBCUDA pointing at it, so that the
// kernels, the driver binding and the backend's host code are checked
// against the CPU backend on every machine. It needs a C++17 compiler ($CXX,
// g++ or c++); under CI (CI=true) a missing one is a failure.
func TestEmulatedGPU(t *testing.T) {
	if os.Getenv("ACTTAIL_LIBCUDA") != "" {
		t.Skip("already running on ACTTAIL_LIBCUDA")
	}
	cxx := os.Getenv("CXX")
	for _, c := range []string{"g++", "c++"} {
		if cxx != "" {
			break
		}
		if p, err := exec.LookPath(c); err == nil {
			cxx = p
		}
	}
	if cxx == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no C++ compiler (CXX, g++ or c++) to build cuda/emu")
		}
		t.Skip("needs a C++ compiler (CXX, g++ or c++) to build cuda/emu")
	}
	lib := filepath.Join(t.TempDir(), "libcuda-emu.so")
	src := filepath.Join("..", "..", "..", "cuda", "emu")
	// Read every source the compiler will, so that go test's cache knows
	// them (it does not see the compiler's reads).
	for _, pat := range []string{"*.cu", "*.cuh", "emu/*.h", "emu/*.cpp", "emu/include/*.h"} {
		files, err := filepath.Glob(filepath.Join(src, "..", pat))
		if err != nil || len(files) == 0 {
			t.Fatalf("cuda/%s: %v", pat, err)
		}
		for _, f := range files {
			if _, err := os.ReadFile(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	build := exec.Command(cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas",
		"-I"+filepath.Join(src, "include"), "-o", lib, filepath.Join(src, "libcuda_emu.cpp"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cuda/emu: %v\n%s", err, out)
	}
	// -short: the large matrices take minutes on the emulator; the odd
	// shapes, tails and every code path stay.
	start := time.Now()
	run := exec.Command(os.Args[0], "-test.run", "^TestGPU", "-test.short", "-test.v", "-test.count=1")
	run.Env = append(os.Environ(), "ACTTAIL_LIBCUDA="+lib, "ACTTAIL_KERNELS=")
	out, err := run.CombinedOutput()
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

	// The decode benchmark's code (plans, calibration, graphs on and off)
	// on a small model: the GPU run should not be where it first runs.
	bench := exec.Command(os.Args[0], "-test.run", "^$", "-test.bench", "Decode7B", "-test.benchtime", "2x")
	bench.Env = append(os.Environ(), "ACTTAIL_LIBCUDA="+lib, "ACTTAIL_KERNELS=", "ACTTAIL_DECODE_PRESET=stories260k")
	out, err = bench.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("threshold/eager")) || !bytes.Contains(out, []byte("x_dense")) {
		t.Fatalf("BenchmarkDecode7B on the emulator: %v\n%s", err, tail(out, 60))
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
