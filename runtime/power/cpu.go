package power

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// procRoot is where Linux exposes cpuinfo and meminfo.
const procRoot = "/proc"

// CPUInfo describes the host CPU. Fields that cannot be read are zero,
// except Threads, which falls back to runtime.NumCPU.
type CPUInfo struct {
	Model       string `json:"model"`
	Cores       int    `json:"cores"`        // physical cores over all sockets
	Threads     int    `json:"threads"`      // logical CPUs online
	MemoryTotal uint64 `json:"memory_total"` // bytes
}

// CPU describes the host CPU from /proc/cpuinfo and /proc/meminfo.
func CPU() CPUInfo {
	return cpuFrom(procRoot)
}

// cpuFrom reads cpuinfo and meminfo under root.
func cpuFrom(root string) CPUInfo {
	var c CPUInfo
	if f, err := os.Open(filepath.Join(root, "cpuinfo")); err == nil {
		c = parseCPUInfo(f)
		f.Close()
	}
	if c.Threads == 0 {
		c.Threads = runtime.NumCPU()
	}
	if c.Cores == 0 {
		c.Cores = c.Threads
	}
	if f, err := os.Open(filepath.Join(root, "meminfo")); err == nil {
		c.MemoryTotal = parseMemTotal(f)
		f.Close()
	}
	return c
}

// parseCPUInfo counts the processor entries of /proc/cpuinfo and the distinct
// (physical id, core id) pairs among them; Cores stays 0 where there are no
// core ids (ARM, some virtual machines).
func parseCPUInfo(r io.Reader) CPUInfo {
	var c CPUInfo
	type core struct{ pkg, id string }
	cores := map[core]bool{}
	var cur core
	flush := func() {
		if cur.id != "" {
			cores[cur] = true
		}
		cur = core{}
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			flush()
			c.Threads++
		case "model name", "Model", "Hardware":
			// x86 says "model name"; ARM boards say "Model" or "Hardware".
			if c.Model == "" {
				c.Model = v
			}
		case "physical id":
			cur.pkg = v
		case "core id":
			cur.id = v
		}
	}
	flush()
	c.Cores = len(cores)
	return c
}

// parseMemTotal returns MemTotal of /proc/meminfo in bytes, or 0.
func parseMemTotal(r io.Reader) uint64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
