// Package cudaemu builds cuda/emu, the CPU stand-in for libcuda.so.1 that
// runs the kernels of cuda/, and re-runs a test binary on it, so that the
// GPU tests of cgo/ and runtime/backend/cuda run on machines without a GPU.
package cudaemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Env is the variable cgo/ reads for a driver library to load instead of
// libcuda.so.1.
const Env = "ACTTAIL_LIBCUDA"

// Active reports whether this process runs on a library named by Env (the
// emulator, in the child Rerun starts).
func Active() bool { return os.Getenv(Env) != "" }

var (
	once sync.Once
	lib  string
	err  error
	out  []byte
)

// Build compiles cuda/emu (root is the repository root) into a temporary
// shared library, once per process, and returns its path. It needs a C++17
// compiler ($CXX, g++ or c++): without one it skips t, or fails it under
// CI=true. It reads every source first, so that go test's cache, which
// does not see the compiler's reads, knows them.
func Build(t testing.TB, root string) string {
	t.Helper()
	src := filepath.Join(root, "cuda")
	for _, pat := range []string{"*.cu", "*.cuh", "emu/*.h", "emu/*.cpp", "emu/include/*.h"} {
		files, err := filepath.Glob(filepath.Join(src, pat))
		if err != nil || len(files) == 0 {
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
	once.Do(func() {
		dir, e := os.MkdirTemp("", "cudaemu")
		if e != nil {
			err = e
			return
		}
		lib = filepath.Join(dir, "libcuda-emu.so")
		cmd := exec.Command(cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas",
			"-I"+filepath.Join(src, "emu", "include"), "-o", lib, filepath.Join(src, "emu", "libcuda_emu.cpp"))
		out, err = cmd.CombinedOutput()
	})
	if err != nil {
		t.Fatalf("build cuda/emu: %v\n%s", err, out)
	}
	return lib
}

// Rerun runs this test binary again on lib with extra environment
// variables and the given test flags, and returns its combined output.
func Rerun(lib string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), Env+"="+lib), env...)
	return cmd.CombinedOutput()
}
