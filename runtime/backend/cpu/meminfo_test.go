package cpu

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMemAvailable(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "meminfo")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := memAvailable(write("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   12345678 kB\n"))
	if err != nil || got != 12345678<<10 {
		t.Fatalf("memAvailable = %d, %v; want %d", got, err, int64(12345678)<<10)
	}
	for _, bad := range []string{"MemTotal: 5 kB\n", "MemAvailable: lots kB\n", "MemAvailable: -4 kB\n"} {
		if n, err := memAvailable(write(bad)); err == nil {
			t.Errorf("%q: %d, want an error", bad, n)
		}
	}
	if _, err := memAvailable(filepath.Join(dir, "absent")); err == nil {
		t.Error("a missing file gave no error")
	}
	if n, err := New(1).FreeMemory(); err != nil || n <= 0 {
		t.Logf("this machine's /proc/meminfo: %d, %v", n, err) // not Linux, say
	}
}
