// Package testfiles finds the model and data files for tests: stories260K
// in the repository, the texts in the shared folder beside the checkout,
// skipping the test when they are absent.
package testfiles

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Find returns the path of rel inside the shared folder, found by walking
// up from the working directory, or "" if there is none (for callers that
// fall back to generated data, such as fuzz seeds).
func Find(rel string) string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, "shared", rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Shared is Find, skipping the test when the file is absent.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	p := Find(rel)
	if p == "" {
		t.Skipf("shared/%s not found above the working directory", rel)
	}
	return p
}

// Stories260K is the directory of the stories260K model: the copy the
// binary embeds (runtime/fetch/stories260K), else the shared one.
func Stories260K(t testing.TB) string {
	t.Helper()
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..", "runtime", "fetch", "stories260K")
		if _, err := os.Stat(filepath.Join(dir, "stories260K.bin")); err == nil {
			return dir
		}
	}
	return Shared(t, "models/stories260K")
}
