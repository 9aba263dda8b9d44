//go:build race

package gather

// The race detector makes sync.Pool drop items at random, so TestNoAllocs
// cannot hold under it.
func init() { raceEnabled = true }
