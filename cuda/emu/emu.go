// Package emu builds the CPU stand-in for libcuda.so.1 whose C++ sources
// are in src/ (it runs the kernels of cuda/), and re-runs a test binary on
// it, so that the GPU tests of cgo/cudadrv and runtime/backend/cuda run on
// machines without a GPU.
package emu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Env is the variable cgo/cudadrv reads for a driver library to load
// instead of libcuda.so.1.
const Env = "ACTTAIL_LIBCUDA"

// Active reports whether this process runs on a library named by Env (the
// emulator, in the child Rerun starts).
func Active() bool { return os.Getenv(Env) != "" }

// A Lib is a built emulator.
type Lib struct {
	Path string // the shared library
	// ASan is set when the library is built with AddressSanitizer: a
	// kernel's read or write outside a device allocation (heap memory here,
	// exactly as long as asked for) aborts the process with a report naming
	// the kernel's file and line. Env then preloads the ASan runtime into
	// the test binary, which Go does not build with ASan.
	ASan bool
	Env  []string
}

// The one build of the process.
var (
	once     sync.Once
	built    Lib
	buildOut []byte
	buildErr error
)

// Build compiles cuda/emu/src (root is the repository root) into a
// temporary shared library, once per process, with AddressSanitizer where
// the compiler has its runtime and without it (t says so) where not: one
// build serves every test of the process. It needs a C++17 compiler ($CXX,
// g++ or c++): without one it skips t, or fails it under CI=true. It reads
// every source first, so that go test's cache, which does not see the
// compiler's reads, knows them.
func Build(t testing.TB, root string) Lib {
	t.Helper()
	cxx := compiler(t, root)
	once.Do(func() { built, buildOut, buildErr = build(root, cxx) })
	if buildErr != nil {
		t.Fatalf("build cuda/emu/src: %v\n%s", buildErr, buildOut)
	}
	if !built.ASan {
		t.Logf("%s has no AddressSanitizer runtime: device memory accesses go unchecked", cxx)
	}
	return built
}

// build compiles the library, with ASan when cxx has its runtime, and
// returns it with the compiler's output.
func build(root, cxx string) (Lib, []byte, error) {
	dir, err := os.MkdirTemp("", "cuda-emu")
	if err != nil {
		return Lib{}, nil, err
	}
	l := Lib{Path: filepath.Join(dir, "libcuda-emu.so")}
	src := filepath.Join(root, "cuda", "emu", "src")
	args := []string{"-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas"}
	if preload := asanRuntime(cxx); preload != "" {
		l.ASan = true
		l.Env = []string{"LD_PRELOAD=" + preload, "ASAN_OPTIONS=detect_leaks=0"}
		// -g1: line tables, enough for a report's file and line.
		args = append(args, "-fsanitize=address", "-fno-omit-frame-pointer", "-g1")
	}
	args = append(args, "-I"+filepath.Join(src, "include"), "-o", l.Path, filepath.Join(src, "libcuda_emu.cpp"))
	out, err := exec.Command(cxx, args...).CombinedOutput()
	return l, out, err
}

// asanRuntime is the path of cxx's ASan runtime, or "" when it has none.
func asanRuntime(cxx string) string {
	out, err := exec.Command(cxx, "-print-file-name=libasan.so").Output()
	p := strings.TrimSpace(string(out))
	if err != nil || !filepath.IsAbs(p) {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// compiler finds the C++ compiler and reads the sources (see Build).
func compiler(t testing.TB, root string) string {
	t.Helper()
	src := filepath.Join(root, "cuda")
	for _, pat := range []string{"*.cu", "*.cuh", "emu/src/*.h", "emu/src/*.cpp", "emu/src/include/*.h"} {
		files, err := filepath.Glob(filepath.Join(src, pat))
		if err != nil || len(files) == 0 {
			// A test binary run away from its package (the GPU check runs
			// them from the repository root) finds no sources.
			if os.Getenv("CI") != "true" {
				t.Skipf("cuda/%s not found from the working directory", pat)
			}
			t.Fatalf("cuda/%s: no files (%v)", pat, err)
		}
		for _, f := range files {
			if _, err := os.ReadFile(f); err != nil {
				t.Fatal(err)
			}
		}
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
	return cxx
}

// Rerun runs this test binary again on l with extra environment variables
// and the given test flags, and returns its combined output. With ASan an
// access outside a device allocation ends the run with an error and a
// report in the output.
func (l Lib) Rerun(env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(append(os.Environ(), Env+"="+l.Path), l.Env...), env...)
	return cmd.CombinedOutput()
}
