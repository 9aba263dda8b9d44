package cpu

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// memAvailable reads MemAvailable (kB) from a /proc/meminfo file, in bytes.
func memAvailable(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("free memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("free memory: %s: bad MemAvailable line %q", path, sc.Text())
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("free memory: %s: %w", path, err)
	}
	return 0, fmt.Errorf("free memory: %s has no MemAvailable line", path)
}
