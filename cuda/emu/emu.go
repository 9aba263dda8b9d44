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

// Env is the variable cgo/cudadrv reads for a driver library to load instead of
// libcuda.so.1.
const Env = "ACTTAIL_LIBCUDA"

// Active reports whether this process runs on a library named by Env (the
// emulator, in the child Rerun starts).
func Active() bool { return os.Getenv(Env) != "" }

// A build is one compiled variant of the library.
type build struct {
	once sync.Once
	lib  string
	err  error
	out  []byte
}

var plain, asan build

// Build compiles cuda/emu/src (root is the repository root) into a temporary
// shared library, once per process, and returns its path. It needs a C++17
// compiler ($CXX, g++ or c++): without one it skips t, or fails it under
// CI=true. It reads every source first, so that go test's cache, which
// does not see the compiler's reads, knows them.
func Build(t testing.TB, root string) string {
	t.Helper()
	return plain.get(t, root, compiler(t, root))
}

// BuildASan is Build with AddressSanitizer: out-of-bounds accesses of the
// kernels to device memory (heap memory here) abort with a report. It
// returns the library and the ASan runtime to preload into the test
// binary (Go is not built with ASan), or skips t when the compiler has no
// ASan runtime.
func BuildASan(t testing.TB, root string) (lib, preload string) {
	t.Helper()
	cxx := compiler(t, root)
	out, err := exec.Command(cxx, "-print-file-name=libasan.so").Output()
	preload = strings.TrimSpace(string(out))
	if err != nil || !filepath.IsAbs(preload) {
		t.Skipf("%s has no AddressSanitizer runtime", cxx)
	}
	if _, err := os.Stat(preload); err != nil {
		t.Skipf("%s has no AddressSanitizer runtime: %v", cxx, err)
	}
	return asan.get(t, root, cxx, "-fsanitize=address", "-fno-omit-frame-pointer", "-g"), preload
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

func (b *build) get(t testing.TB, root, cxx string, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "cuda-emu")
		if err != nil {
			b.err = err
			return
		}
		b.lib = filepath.Join(dir, "libcuda-emu.so")
		src := filepath.Join(root, "cuda", "emu", "src")
		args := append([]string{"-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas"}, flags...)
		args = append(args, "-I"+filepath.Join(src, "include"), "-o", b.lib, filepath.Join(src, "libcuda_emu.cpp"))
		b.out, b.err = exec.Command(cxx, args...).CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("build cuda/emu/src: %v\n%s", b.err, b.out)
	}
	return b.lib
}

// Rerun runs this test binary again on lib with extra environment
// variables and the given test flags, and returns its combined output.
func Rerun(lib string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), Env+"="+lib), env...)
	return cmd.CombinedOutput()
}
