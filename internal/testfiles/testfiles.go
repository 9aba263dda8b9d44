// Package testfiles finds the shared model and data files (the "shared"
// folder beside the checkout) for tests, skipping the test when they are
// absent.
package testfiles

import (
	"os"
	"path/filepath"
	"testing"
)

// Shared returns the path of rel inside the shared folder, found by walking
// up from the working directory; the test is skipped if there is none.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skipf("shared/%s not found above the working directory", rel)
		}
		dir = parent
	}
}

// Stories260K is the directory of the bundled stories260K model.
func Stories260K(t testing.TB) string { return Shared(t, "models/stories260K") }
