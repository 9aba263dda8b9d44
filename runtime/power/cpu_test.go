package power

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// x86CPUInfo writes a /proc/cpuinfo of sockets × cores × 2 hyperthreads.
func x86CPUInfo(sockets, cores int) string {
	var b strings.Builder
	n := 0
	for s := range sockets {
		for c := range cores {
			for range 2 {
				fmt.Fprintf(&b, "processor\t: %d\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n", n)
				fmt.Fprintf(&b, "physical id\t: %d\nsiblings\t: %d\ncore id\t\t: %d\n\n", s, 2*cores, c)
				n++
			}
		}
	}
	return b.String()
}

const armCPUInfo = `processor	: 0
BogoMIPS	: 48.00
CPU part	: 0xd0c

processor	: 1
BogoMIPS	: 48.00
CPU part	: 0xd0c

Hardware	: Neoverse-N1 board
`

const memInfo = `MemTotal:       16303364 kB
MemFree:         1234567 kB
`

func procTree(t *testing.T, cpuinfo, meminfo string) string {
	t.Helper()
	root := t.TempDir()
	for name, s := range map[string]string{"cpuinfo": cpuinfo, "meminfo": meminfo} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCPUInfo(t *testing.T) {
	for _, c := range []struct {
		name, cpuinfo string
		want          CPUInfo
	}{
		// Two sockets with the same core ids: cores are told apart by socket.
		{"x86 2 sockets", x86CPUInfo(2, 2), CPUInfo{"Intel(R) Xeon(R) Platinum 8480+", 4, 8, 16303364 << 10}},
		// No core ids: every thread counts as a core.
		{"arm", armCPUInfo, CPUInfo{"Neoverse-N1 board", 2, 2, 16303364 << 10}},
	} {
		got := cpuFrom(procTree(t, c.cpuinfo, memInfo))
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestCPUInfoMissing(t *testing.T) {
	got := cpuFrom(filepath.Join(t.TempDir(), "no-proc"))
	want := CPUInfo{Cores: runtime.NumCPU(), Threads: runtime.NumCPU()}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// The host's own /proc parses into something plausible.
func TestCPUHost(t *testing.T) {
	c := CPU()
	if c.Threads < 1 || c.Cores < 1 || c.Cores > c.Threads {
		t.Errorf("implausible %+v", c)
	}
	t.Logf("%+v", c)
}
