package power

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// powercapRoot is where Linux exposes its powercap zones.
const powercapRoot = "/sys/class/powercap"

// raplPoll is how often a running RAPL meter reads its counters so that no
// wraparound is missed: AMD's 32-bit counters wrap after about 65 kJ, a few
// minutes at full load.
const raplPoll = time.Second

// zone is one powercap energy counter.
type zone struct {
	dir  string // e.g. /sys/class/powercap/intel-rapl:0
	name string // e.g. package-0
	max  uint64 // max_energy_range_uj: the counter wraps to 0 past it
	last uint64 // last reading of energy_uj
	uj   uint64 // energy since Start, µJ
}

// read returns the zone's energy_uj counter.
func (z *zone) read() (uint64, error) {
	return readUint(filepath.Join(z.dir, "energy_uj"))
}

// advance adds the energy from the last reading to now, assuming at most
// one wrap in between.
func (z *zone) advance(now uint64) {
	if now >= z.last {
		z.uj += now - z.last
	} else {
		z.uj += z.max - z.last + now
	}
	z.last = now
}

// raplMeter sums the package zones of the powercap interface.
type raplMeter struct {
	zones []*zone
	poll  time.Duration

	running bool
	start   time.Time
	stop    chan struct{} // closed by Stop
	done    chan struct{} // closed by the poller when it has returned
}

// NewRAPL returns a meter of CPU package energy from the Linux powercap
// interface: the top-level "package" zones of intel-rapl (Intel, and AMD
// Zen since Linux 5.8 under the same name), or of any other powercap
// control type where intel-rapl is absent. Subzones (core, uncore, dram) are
// parts of their package and are not added again; psys and the MMIO copy of
// the package counter (intel-rapl-mmio) would count the same energy twice.
//
// The error starts "RAPL not readable:" and says why: no powercap interface
// (virtual machines, non-Linux), or energy_uj readable only by root (Linux
// 5.10 and newer).
func NewRAPL() (Meter, error) {
	return newRAPL(powercapRoot)
}

func newRAPL(root string) (*raplMeter, error) {
	zones, err := packageZones(root)
	if err != nil {
		return nil, fmt.Errorf("RAPL not readable: %w", err)
	}
	return &raplMeter{zones: zones, poll: raplPoll}, nil
}

// packageZones finds the zones to sum under root and checks that they read.
func packageZones(root string) ([]*zone, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no powercap interface (%s missing)", root)
	}
	if err != nil {
		return nil, err
	}
	// Top-level zones are "<control type>:<n>"; subzones have a second colon.
	byType := map[string][]string{}
	for _, e := range entries {
		typ, n, ok := strings.Cut(e.Name(), ":")
		if !ok || strings.Contains(n, ":") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, e.Name(), "energy_uj")); err == nil {
			byType[typ] = append(byType[typ], e.Name())
		}
	}
	dirs := byType["intel-rapl"]
	if dirs == nil {
		types := make([]string, 0, len(byType))
		for t := range byType {
			types = append(types, t)
		}
		sort.Strings(types)
		if len(types) > 0 {
			dirs = byType[types[0]]
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("no powercap zone with an energy counter under %s", root)
	}
	sort.Strings(dirs)
	var all, pkgs []*zone
	for _, d := range dirs {
		z := &zone{dir: filepath.Join(root, d)}
		name, err := os.ReadFile(filepath.Join(z.dir, "name"))
		if err != nil {
			return nil, err
		}
		z.name = strings.TrimSpace(string(name))
		if z.max, err = readUint(filepath.Join(z.dir, "max_energy_range_uj")); err != nil {
			return nil, err
		}
		if _, err := z.read(); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return nil, fmt.Errorf("%w (energy_uj is readable only by root since Linux 5.10)", err)
			}
			return nil, err
		}
		all = append(all, z)
		if strings.HasPrefix(z.name, "package") {
			pkgs = append(pkgs, z)
		}
	}
	if len(pkgs) > 0 {
		return pkgs, nil
	}
	return all, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func (m *raplMeter) Name() string {
	return fmt.Sprintf("cpu RAPL (%s)", m.zoneNames())
}

func (m *raplMeter) zoneNames() string {
	names := make([]string, len(m.zones))
	for i, z := range m.zones {
		names[i] = z.name
	}
	return strings.Join(names, " + ")
}

func (m *raplMeter) Start() error {
	if m.running {
		return errStarted
	}
	for _, z := range m.zones {
		v, err := z.read()
		if err != nil {
			return fmt.Errorf("RAPL %s: %w", z.name, err)
		}
		z.last, z.uj = v, 0
	}
	m.start = time.Now()
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go m.poller()
	m.running = true
	return nil
}

// poller advances the counters every m.poll until Stop, so that a long run
// sees every wrap. A failed read is skipped: Stop reads again and reports.
func (m *raplMeter) poller() {
	defer close(m.done)
	tick := time.NewTicker(m.poll)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
			m.advance()
		}
	}
}

// advance reads every zone and adds the energy since its last reading.
func (m *raplMeter) advance() error {
	for _, z := range m.zones {
		v, err := z.read()
		if err != nil {
			return fmt.Errorf("RAPL %s: %w", z.name, err)
		}
		z.advance(v)
	}
	return nil
}

func (m *raplMeter) Stop() (Reading, error) {
	if !m.running {
		return Reading{}, errNotStarted
	}
	m.running = false
	close(m.stop)
	<-m.done
	if err := m.advance(); err != nil {
		return Reading{}, err
	}
	secs := time.Since(m.start).Seconds()
	var uj uint64
	for _, z := range m.zones {
		uj += z.uj
	}
	return Reading{Joules: float64(uj) / 1e6, Seconds: secs, Method: MethodRAPL, Note: m.zoneNames()}, nil
}
