//go:build race

package cputest

// Race is whether the race detector is on. It makes sync.Pool drop items
// at random, so allocation tests cannot hold under it.
const Race = true
