package power

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeZone is one zone of a fake powercap tree.
type fakeZone struct {
	dir, name   string
	max, energy uint64
}

// powercapTree writes zones under a fresh root, with the control-type
// directory Linux also has, and returns the root.
func powercapTree(t *testing.T, zones ...fakeZone) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "intel-rapl"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, z := range zones {
		dir := filepath.Join(root, z.dir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "name"), z.name+"\n")
		writeFile(t, filepath.Join(dir, "max_energy_range_uj"), strconv.FormatUint(z.max, 10)+"\n")
		setEnergy(t, root, z.dir, z.energy)
	}
	return root
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func setEnergy(t *testing.T, root, dir string, uj uint64) {
	t.Helper()
	writeFile(t, filepath.Join(root, dir, "energy_uj"), strconv.FormatUint(uj, 10)+"\n")
}

// A two-socket Intel server: packages are summed; the core subzone, psys and
// the MMIO copy of package-0 are not.
func serverTree(t *testing.T) string {
	return powercapTree(t,
		fakeZone{"intel-rapl:0", "package-0", 1_000_000, 900_000},
		fakeZone{"intel-rapl:0:0", "core", 1_000_000, 5},
		fakeZone{"intel-rapl:1", "package-1", 1_000_000, 0},
		fakeZone{"intel-rapl:2", "psys", 1_000_000, 7},
		fakeZone{"intel-rapl-mmio:0", "package-0", 1_000_000, 9},
	)
}

// startRAPL starts a meter on the tree at root. Its background poller is
// kept quiet, so that it does not read the tree while a test rewrites it;
// tests call advance themselves.
func startRAPL(t *testing.T, root string) *raplMeter {
	t.Helper()
	m, err := newRAPL(root)
	if err != nil {
		t.Fatal(err)
	}
	m.poll = time.Hour
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRAPLSumsPackagesWithWrap(t *testing.T) {
	root := serverTree(t)
	m := startRAPL(t, root)
	if got, want := m.Name(), "cpu RAPL (package-0 + package-1)"; got != want {
		t.Errorf("name %q, want %q", got, want)
	}
	setEnergy(t, root, "intel-rapl:0", 100_000) // wrapped: 100 000 + 100 000 µJ
	setEnergy(t, root, "intel-rapl:1", 500_000)
	setEnergy(t, root, "intel-rapl:0:0", 999_999)
	setEnergy(t, root, "intel-rapl:2", 999_999)
	r, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.Joules-0.7) > 1e-12 || r.Method != MethodRAPL || r.Seconds <= 0 {
		t.Errorf("got %+v, want 0.7 J by rapl", r)
	}
}

// Polling between Start and Stop catches a counter that wraps more than once.
func TestRAPLPollCatchesRepeatedWraps(t *testing.T) {
	root := powercapTree(t, fakeZone{"intel-rapl:0", "package-0", 1_000_000, 900_000})
	m := startRAPL(t, root)
	for _, uj := range []uint64{500_000, 400_000, 450_000} { // +600 000, +900 000, +50 000
		setEnergy(t, root, "intel-rapl:0", uj)
		if err := m.advance(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.Joules-1.55) > 1e-12 {
		t.Errorf("%g J, want 1.55", r.Joules)
	}
	// A second run starts from zero.
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	setEnergy(t, root, "intel-rapl:0", 450_010)
	if r, err := m.Stop(); err != nil || r.Joules != 10e-6 {
		t.Errorf("second run: %+v, %v; want 1e-05 J", r, err)
	}
}

// Zone choice where intel-rapl is absent or has no package zone.
func TestRAPLZoneChoice(t *testing.T) {
	for _, c := range []struct {
		name  string
		zones []fakeZone
		want  string
	}{
		{"mmio only", []fakeZone{{"intel-rapl-mmio:0", "package-0", 10, 1}}, "cpu RAPL (package-0)"},
		{"no package zone", []fakeZone{{"intel-rapl:0", "psys", 10, 1}, {"intel-rapl:1", "dram", 10, 1}}, "cpu RAPL (psys + dram)"},
	} {
		m, err := newRAPL(powercapTree(t, c.zones...))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if m.Name() != c.want {
			t.Errorf("%s: %q, want %q", c.name, m.Name(), c.want)
		}
	}
}

func TestRAPLNotReadable(t *testing.T) {
	dirAsCounter := serverTree(t)
	p := filepath.Join(dirAsCounter, "intel-rapl:1", "energy_uj")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	garbage := serverTree(t)
	writeFile(t, filepath.Join(garbage, "intel-rapl:0", "energy_uj"), "n/a\n")
	cases := []struct{ name, root, want string }{
		{"no powercap", filepath.Join(t.TempDir(), "powercap"), "no powercap interface"},
		{"no zones", powercapTree(t), "no powercap zone with an energy counter"},
		{"counter is a directory", dirAsCounter, "is a directory"},
		{"garbage", garbage, "invalid syntax"},
	}
	if os.Geteuid() != 0 { // root reads a file whatever its mode
		denied := serverTree(t)
		if err := os.Chmod(filepath.Join(denied, "intel-rapl:0", "energy_uj"), 0); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ name, root, want string }{"root only", denied, "readable only by root"})
	}
	for _, c := range cases {
		_, err := newRAPL(c.root)
		if err == nil || !strings.HasPrefix(err.Error(), "RAPL not readable: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want RAPL not readable: ...%s...", c.name, err, c.want)
		}
	}
}

// A counter that disappears during a run fails Stop, not the process.
func TestRAPLCounterLostDuringRun(t *testing.T) {
	root := serverTree(t)
	m := startRAPL(t, root)
	if err := os.Remove(filepath.Join(root, "intel-rapl:1", "energy_uj")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(); err == nil || !strings.Contains(err.Error(), "package-1") {
		t.Errorf("Stop: %v, want an error naming package-1", err)
	}
}

func TestRAPLOutOfTurn(t *testing.T) {
	m, err := newRAPL(serverTree(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(); err != errNotStarted {
		t.Errorf("Stop before Start: %v", err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != errStarted {
		t.Errorf("Start twice: %v", err)
	}
	if _, err := m.Stop(); err != nil {
		t.Error(err)
	}
}

// The host: a meter or a reason, never a panic.
func TestRAPLHost(t *testing.T) {
	m, err := NewRAPL()
	if err != nil {
		if !strings.HasPrefix(err.Error(), "RAPL not readable: ") {
			t.Errorf("error %q lacks the prefix", err)
		}
		t.Log(err)
		return
	}
	t.Log(m.Name())
}
